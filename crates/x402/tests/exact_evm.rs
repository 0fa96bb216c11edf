//! Golden vector, header round trips, sign-then-verify and rejection tests for `x402`.

use alloy_primitives::{address, b256, Address, Bytes, B256};
use alloy_sol_types::SolStruct;
use serde_json::json;
use x402::codec::{decode_header_bytes, encode_header, HEADER_VALUE_BYTES_MAX};
use x402::exact_evm::{
    parse_evm_address, recover_signer, token_domain, SignatureProblem, TransferWithAuthorization, BASE_SEPOLIA_USDC,
};
use x402::select::OfferedRequirement;
use x402::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

const GOLDEN_X_PAYMENT_JSON: &str = r#"{"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":{
 "signature":"0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c",
 "authorization":{"from":"0x857b06519E91e3A54538791bDbb0E22373e36b66","to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
  "value":"10000","validAfter":"1740672089","validBefore":"1740672154",
  "nonce":"0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"}}}"#;

const GOLDEN_PAYER: Address = address!("857b06519E91e3A54538791bDbb0E22373e36b66");
const GOLDEN_PAY_TO: Address = address!("209693Bc6afc0C5328bA36FaF03C514EF312287C");
const GOLDEN_VALID_AFTER: u64 = 1_740_672_089;
const GOLDEN_VALID_BEFORE: u64 = 1_740_672_154;

/// `PAYMENT-REQUIRED` example from the v2 HTTP transport spec.
const SPEC_V2_PAYMENT_REQUIRED: &str = "eyJ4NDAyVmVyc2lvbiI6MiwiZXJyb3IiOiJQQVlNRU5ULVNJR05BVFVSRSBoZWFkZXIgaXMgcmVxdWlyZWQiLCJyZXNvdXJjZSI6eyJ1cmwiOiJodHRwczovL2FwaS5leGFtcGxlLmNvbS9wcmVtaXVtLWRhdGEiLCJkZXNjcmlwdGlvbiI6IkFjY2VzcyB0byBwcmVtaXVtIG1hcmtldCBkYXRhIiwibWltZVR5cGUiOiJhcHBsaWNhdGlvbi9qc29uIn0sImFjY2VwdHMiOlt7InNjaGVtZSI6ImV4YWN0IiwibmV0d29yayI6ImVpcDE1NTo4NDUzMiIsImFtb3VudCI6IjEwMDAwIiwiYXNzZXQiOiIweDAzNkNiRDUzODQyYzU0MjY2MzRlNzkyOTU0MWVDMjMxOGYzZENGN2UiLCJwYXlUbyI6IjB4MjA5NjkzQmM2YWZjMEM1MzI4YkEzNkZhRjAzQzUxNEVGMzEyMjg3QyIsIm1heFRpbWVvdXRTZWNvbmRzIjo2MCwiZXh0cmEiOnsibmFtZSI6IlVTREMiLCJ2ZXJzaW9uIjoiMiJ9fV19";

/// `PAYMENT-SIGNATURE` example from the v2 HTTP transport spec (same signature as the golden
/// v1 vector).
const SPEC_V2_PAYMENT_SIGNATURE: &str = "eyJ4NDAyVmVyc2lvbiI6MiwicmVzb3VyY2UiOnsidXJsIjoiaHR0cHM6Ly9hcGkuZXhhbXBsZS5jb20vcHJlbWl1bS1kYXRhIiwiZGVzY3JpcHRpb24iOiJBY2Nlc3MgdG8gcHJlbWl1bSBtYXJrZXQgZGF0YSIsIm1pbWVUeXBlIjoiYXBwbGljYXRpb24vanNvbiJ9LCJhY2NlcHRlZCI6eyJzY2hlbWUiOiJleGFjdCIsIm5ldHdvcmsiOiJlaXAxNTU6ODQ1MzIiLCJhbW91bnQiOiIxMDAwMCIsImFzc2V0IjoiMHgwMzZDYkQ1Mzg0MmM1NDI2NjM0ZTc5Mjk1NDFlQzIzMThmM2RDRjdlIiwicGF5VG8iOiIweDIwOTY5M0JjNmFmYzBDNTMyOGJBMzZGYUYwM0M1MTRFRjMxMjI4N0MiLCJtYXhUaW1lb3V0U2Vjb25kcyI6NjAsImV4dHJhIjp7Im5hbWUiOiJVU0RDIiwidmVyc2lvbiI6IjIifX0sInBheWxvYWQiOnsic2lnbmF0dXJlIjoiMHgyZDZhNzU4OGQ2YWNjYTUwNWNiZjBkOWE0YTIyN2UwYzUyYzZjMzQwMDhjOGU4OTg2YTEyODMyNTk3NjQxNzM2MDhhMmNlNjQ5NjY0MmUzNzdkNmRhOGRiYmY1ODM2ZTliZDE1MDkyZjllY2FiMDVkZWQzZDYyOTNhZjE0OGI1NzFjIiwiYXV0aG9yaXphdGlvbiI6eyJmcm9tIjoiMHg4NTdiMDY1MTlFOTFlM0E1NDUzODc5MWJEYmIwRTIyMzczZTM2YjY2IiwidG8iOiIweDIwOTY5M0JjNmFmYzBDNTMyOGJBMzZGYUYwM0M1MTRFRjMxMjI4N0MiLCJ2YWx1ZSI6IjEwMDAwIiwidmFsaWRBZnRlciI6IjE3NDA2NzIwODkiLCJ2YWxpZEJlZm9yZSI6IjE3NDA2NzIxNTQiLCJub25jZSI6IjB4ZjM3NDY2MTNjMmQ5MjBiNWZkYWJjMDg1NmYyYWViMmQ0Zjg4ZWU2MDM3YjhjYzVkMDRhNzFhNDQ2MmYxMzQ4MCJ9fX0=";

/// Failure `PAYMENT-RESPONSE` example from the v2 HTTP transport spec (no `transaction`).
const SPEC_V2_PAYMENT_RESPONSE_FAILURE: &str =
    "eyJzdWNjZXNzIjpmYWxzZSwiZXJyb3JSZWFzb24iOiJpbnN1ZmZpY2llbnRfZnVuZHMiLCJuZXR3b3JrIjoiZWlwMTU1Ojg0NTMyIn0=";

fn golden_requirement_v1() -> PaymentRequirementsV1 {
    serde_json::from_value(json!({
        "scheme": "exact",
        "network": "base-sepolia",
        "maxAmountRequired": "10000",
        "resource": "https://api.example.com/premium-data",
        "description": "Access to premium market data",
        "mimeType": "application/json",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "maxTimeoutSeconds": 60,
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "extra": {"name": "USDC", "version": "2"}
    }))
    .unwrap()
}

fn golden_payload_v1() -> PaymentPayloadV1 {
    serde_json::from_str(GOLDEN_X_PAYMENT_JSON).unwrap()
}

fn base_sepolia_domain(name: &str) -> alloy_sol_types::Eip712Domain {
    token_domain(name, "2", 84_532, BASE_SEPOLIA_USDC)
}

/// Deterministic test payer (fixed scalar, never a real key).
fn payer() -> LocalKeySigner {
    LocalKeySigner::from_bytes(&[0x11; 32]).unwrap()
}

const MERCHANT: Address = address!("209693Bc6afc0C5328bA36FaF03C514EF312287C");
const NOW: u64 = 1_750_000_000;
const NONCE: B256 = b256!("0101010101010101010101010101010101010101010101010101010101010101");

fn requirement_v2(amount: u128) -> PaymentRequirementsV2 {
    PaymentRequirementsV2 {
        scheme: "exact".into(),
        network: "eip155:84532".into(),
        amount,
        asset: BASE_SEPOLIA_USDC.to_checksum(None),
        pay_to: MERCHANT.to_checksum(None),
        max_timeout_seconds: 60,
        extra: Some(json!({"name": "USDC", "version": "2"})),
        unknown_fields: Default::default(),
    }
}

fn requirement_v1(amount: u128) -> PaymentRequirementsV1 {
    let mut r = golden_requirement_v1();
    r.max_amount_required = amount;
    r
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn signed_v1(req: &PaymentRequirementsV1) -> PaymentPayloadV1 {
    block_on(build_payment_v1(req, &payer(), NOW, NONCE)).unwrap()
}

fn signed_v2(req: &PaymentRequirementsV2) -> PaymentPayloadV2 {
    block_on(build_payment_v2(req, None, None, &payer(), NOW, NONCE)).unwrap()
}

fn verify_v1(p: &PaymentPayloadV1, r: &PaymentRequirementsV1, now: u64) -> Result<VerifiedPayment, VerifyError> {
    verify(&PaymentPayload::V1(p.clone()), &PaymentRequirements::V1(r.clone()), now)
}

fn verify_v2(p: &PaymentPayloadV2, r: &PaymentRequirementsV2, now: u64) -> Result<VerifiedPayment, VerifyError> {
    verify(&PaymentPayload::V2(p.clone()), &PaymentRequirements::V2(r.clone()), now)
}

// ---------------------------------------------------------------------------------------------
// Golden vector

#[test]
fn golden_type_hashes() {
    let domain = base_sepolia_domain("USDC");
    assert_eq!(
        domain.type_hash(),
        b256!("8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f")
    );
    assert_eq!(
        domain.encode_type(),
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    let auth = golden_payload_v1().payload.authorization.to_eip3009();
    assert_eq!(
        auth.eip712_type_hash(),
        b256!("7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267")
    );
    assert_eq!(
        TransferWithAuthorization::eip712_encode_type(),
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
}

#[test]
fn golden_domain_separator_digest_and_signer() {
    let domain = base_sepolia_domain("USDC");
    assert_eq!(
        domain.separator(),
        b256!("71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818")
    );
    let payload = golden_payload_v1();
    assert_eq!(
        payload.payload.authorization.signing_hash(&domain),
        b256!("f256992871671abcb27ff92885a7afa46218724e5fc0bac35d050115aa1d22e6")
    );
    let recovered = recover_signer(&payload.payload, &domain).unwrap();
    assert_eq!(recovered, GOLDEN_PAYER);
    assert_eq!(recovered, address!("857b06519e91e3a54538791bdbb0e22373e36b66"));
}

#[test]
fn golden_wrong_domain_name_recovers_a_different_address() {
    let payload = golden_payload_v1();
    let wrong = recover_signer(&payload.payload, &base_sepolia_domain("USD Coin")).unwrap();
    assert_ne!(wrong, GOLDEN_PAYER);
    assert_ne!(wrong, Address::ZERO);
    // And verification with such requirements names the signature as the problem.
    let mut req = golden_requirement_v1();
    req.extra = Some(json!({"name": "USD Coin", "version": "2"}));
    let err = verify_v1(&payload, &req, GOLDEN_VALID_AFTER + 1).unwrap_err();
    assert_eq!(
        err,
        VerifyError::SignerMismatch {
            recovered: wrong,
            from: GOLDEN_PAYER
        }
    );
    assert_eq!(err.reason().as_str(), "invalid_exact_evm_payload_signature");
}

#[test]
fn golden_payload_verifies_inside_its_window_only() {
    let payload = golden_payload_v1();
    let req = golden_requirement_v1();
    let ok = verify_v1(&payload, &req, GOLDEN_VALID_AFTER + 1).unwrap();
    assert_eq!(ok.payer, GOLDEN_PAYER);
    assert_eq!(ok.pay_to, GOLDEN_PAY_TO);
    assert_eq!(ok.value, 10_000);
    assert_eq!(ok.network, Network::BaseSepolia);
    assert_eq!(ok.asset, BASE_SEPOLIA_USDC);
    assert!(verify_v1(&payload, &req, GOLDEN_VALID_BEFORE - 1).is_ok());

    let early = verify_v1(&payload, &req, GOLDEN_VALID_AFTER).unwrap_err();
    assert_eq!(
        early.reason().as_str(),
        "invalid_exact_evm_payload_authorization_valid_after"
    );
    let late = verify_v1(&payload, &req, GOLDEN_VALID_BEFORE).unwrap_err();
    assert_eq!(
        late,
        VerifyError::Expired {
            valid_before: GOLDEN_VALID_BEFORE,
            now_unix_secs: GOLDEN_VALID_BEFORE
        }
    );
    assert_eq!(
        late.reason().as_str(),
        "invalid_exact_evm_payload_authorization_valid_before"
    );
}

#[test]
fn golden_header_round_trip_v1() {
    let payload = golden_payload_v1();
    let header = payload.to_header().unwrap();
    let back = PaymentPayloadV1::from_header(&header).unwrap();
    assert_eq!(back, payload);
    // Also readable as the version-dispatching enum.
    assert_eq!(
        PaymentPayload::from_header(&header).unwrap(),
        PaymentPayload::V1(payload)
    );
}

#[test]
fn spec_v2_headers_decode_and_verify() {
    let required = PaymentRequiredV2::from_header(SPEC_V2_PAYMENT_REQUIRED).unwrap();
    assert_eq!(required.x402_version, X402Version::V2);
    assert_eq!(required.resource.url, "https://api.example.com/premium-data");
    assert_eq!(required.accepts.len(), 1);
    assert_eq!(required.accepts[0].amount, 10_000);
    assert_eq!(required.accepts[0].network, "eip155:84532");

    let payment = PaymentPayloadV2::from_header(SPEC_V2_PAYMENT_SIGNATURE).unwrap();
    assert_eq!(payment.accepted, required.accepts[0]);
    let verified = verify_v2(&payment, &required.accepts[0], GOLDEN_VALID_AFTER + 10).unwrap();
    assert_eq!(verified.payer, GOLDEN_PAYER);
    assert_eq!(verified.version, X402Version::V2);

    let failure = SettlementResponse::from_header(SPEC_V2_PAYMENT_RESPONSE_FAILURE).unwrap();
    assert!(!failure.success);
    assert_eq!(failure.error_reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(failure.transaction, "");
    assert_eq!(
        ErrorReason::parse(failure.error_reason.as_deref().unwrap()),
        Some(ErrorReason::InsufficientFunds)
    );
}

// ---------------------------------------------------------------------------------------------
// Header round trips

#[test]
fn round_trip_payment_required_v1_body() {
    let body = PaymentRequiredV1 {
        x402_version: X402Version::V1,
        error: Some("X-PAYMENT header is required".into()),
        accepts: vec![golden_requirement_v1()],
    };
    let bytes = body.to_json_vec().unwrap();
    assert_eq!(PaymentRequiredV1::from_json_slice(&bytes).unwrap(), body);
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["x402Version"], 1);
    assert_eq!(value["accepts"][0]["maxAmountRequired"], "10000");
    assert_eq!(
        value["accepts"][0]["payTo"],
        "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
    );
    assert_eq!(value["accepts"][0]["maxTimeoutSeconds"], 60);
}

#[test]
fn round_trip_payment_required_v2_header() {
    let required = PaymentRequiredV2 {
        x402_version: X402Version::V2,
        error: None,
        resource: ResourceInfo {
            url: "http://127.0.0.1/paid".into(),
            description: Some("paid".into()),
            mime_type: None,
            unknown_fields: Default::default(),
        },
        accepts: vec![requirement_v2(10_000)],
        extensions: Some(json!({"bazaar": {"info": {}, "schema": {}}})),
    };
    let header = required.to_header().unwrap();
    assert_eq!(PaymentRequiredV2::from_header(&header).unwrap(), required);
}

#[test]
fn round_trip_payment_payload_v2_header() {
    let payment = signed_v2(&requirement_v2(10_000));
    let header = payment.to_header().unwrap();
    assert_eq!(PaymentPayloadV2::from_header(&header).unwrap(), payment);
    let json: serde_json::Value = serde_json::from_slice(&decode_header_bytes(&header).unwrap()).unwrap();
    assert_eq!(json["x402Version"], 2);
    assert_eq!(json["accepted"]["amount"], "10000");
    assert_eq!(json["payload"]["authorization"]["value"], "10000");
    assert_eq!(json["payload"]["authorization"]["validBefore"], (NOW + 60).to_string());
    assert_eq!(json["payload"]["authorization"]["validAfter"], (NOW - 600).to_string());
    let sig = json["payload"]["signature"].as_str().unwrap();
    assert!(sig.starts_with("0x") && sig.len() == 2 + 130, "{sig}");
}

#[test]
fn round_trip_settlement_responses() {
    let v1 = SettlementResponse {
        success: true,
        error_reason: None,
        transaction: "0x1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef".into(),
        network: "base-sepolia".into(),
        payer: Some("0x857b06519E91e3A54538791bDbb0E22373e36b66".into()),
        amount: None,
        extensions: None,
    };
    let header = v1.to_header().unwrap();
    assert_eq!(SettlementResponse::from_header(&header).unwrap(), v1);
    let json: serde_json::Value = serde_json::from_slice(&decode_header_bytes(&header).unwrap()).unwrap();
    assert_eq!(
        json,
        json!({"success":true,"transaction":"0x1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef","network":"base-sepolia","payer":"0x857b06519E91e3A54538791bDbb0E22373e36b66"})
    );

    let v2 = SettlementResponse {
        success: false,
        error_reason: Some("unexpected_settle_error".into()),
        transaction: String::new(),
        network: "eip155:84532".into(),
        payer: None,
        amount: Some(10_000),
        extensions: Some(json!({})),
    };
    let header = v2.to_header().unwrap();
    let back = SettlementResponse::from_header(&header).unwrap();
    assert_eq!(back, v2);
    let json: serde_json::Value = serde_json::from_slice(&decode_header_bytes(&header).unwrap()).unwrap();
    assert_eq!(json["amount"], "10000");
}

#[test]
fn round_trip_facilitator_messages() {
    for request in [
        FacilitatorRequest {
            x402_version: X402Version::V1,
            payment_payload: PaymentPayload::V1(golden_payload_v1()),
            payment_requirements: PaymentRequirements::V1(golden_requirement_v1()),
        },
        FacilitatorRequest {
            x402_version: X402Version::V2,
            payment_payload: PaymentPayload::V2(signed_v2(&requirement_v2(5))),
            payment_requirements: PaymentRequirements::V2(requirement_v2(5)),
        },
    ] {
        let bytes = request.to_json_vec().unwrap();
        assert_eq!(FacilitatorRequest::from_json_slice(&bytes).unwrap(), request);
    }
    // x402Version may be absent at the top level; the payload's version is used.
    let without_version = json!({
        "paymentPayload": serde_json::to_value(golden_payload_v1()).unwrap(),
        "paymentRequirements": serde_json::to_value(golden_requirement_v1()).unwrap(),
    });
    let parsed: FacilitatorRequest = serde_json::from_value(without_version).unwrap();
    assert_eq!(parsed.x402_version, X402Version::V1);

    let verify_response: VerifyResponse =
        serde_json::from_str(r#"{"isValid":false,"invalidReason":"insufficient_funds","payer":"0x857b06519E91e3A54538791bDbb0E22373e36b66"}"#).unwrap();
    assert!(!verify_response.is_valid);
    assert_eq!(verify_response.invalid_reason.as_deref(), Some("insufficient_funds"));

    let supported: SupportedResponse = serde_json::from_str(
        r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"},{"x402Version":1,"scheme":"exact","network":"base-sepolia"}],"extensions":[],"signers":{"eip155:*":["0x1234567890abcdef1234567890abcdef12345678"]}}"#,
    )
    .unwrap();
    assert_eq!(supported.kinds.len(), 2);
    assert_eq!(supported.kinds[1].x402_version, X402Version::V1);
}

#[test]
fn unknown_requirement_fields_are_kept_and_echoed() {
    let raw = json!({
        "scheme": "exact", "network": "eip155:84532", "amount": "10000",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"},
        "serverHint": {"tier": "gold"}, "outputSchema": null
    });
    let req: PaymentRequirementsV2 = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(req.unknown_fields["serverHint"], json!({"tier": "gold"}));
    let payment = signed_v2(&req);
    let echoed = serde_json::to_value(&payment.accepted).unwrap();
    assert_eq!(echoed, raw);
}

// ---------------------------------------------------------------------------------------------
// Malformed input: typed errors, no panics

#[test]
fn malformed_headers_give_typed_errors() {
    assert!(matches!(
        PaymentPayloadV1::from_header("not base64 !!!"),
        Err(DecodeError::Base64(_))
    ));
    assert!(matches!(PaymentPayloadV2::from_header(""), Err(DecodeError::Json(_))));
    let not_json = encode_header("just a string").unwrap();
    assert!(matches!(
        PaymentPayloadV1::from_header(&not_json),
        Err(DecodeError::VersionMismatch { found: None, .. })
    ));
    let garbage = base64_of(b"{not json");
    assert!(matches!(
        PaymentRequiredV2::from_header(&garbage),
        Err(DecodeError::Json(_))
    ));
    let binary = base64_of(&[0xff, 0xfe, 0x00]);
    assert!(matches!(
        SettlementResponse::from_header(&binary),
        Err(DecodeError::Json(_))
    ));
    let too_big = "A".repeat(HEADER_VALUE_BYTES_MAX + 4);
    assert!(matches!(
        PaymentPayloadV2::from_header(&too_big),
        Err(DecodeError::TooLarge { .. })
    ));
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn wrong_version_is_a_typed_error() {
    let v2_header = signed_v2(&requirement_v2(1)).to_header().unwrap();
    match PaymentPayloadV1::from_header(&v2_header) {
        Err(DecodeError::VersionMismatch { expected, found }) => {
            assert_eq!(expected, X402Version::V1);
            assert_eq!(found, Some(2));
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    let v3 = encode_header(&json!({"x402Version": 3, "scheme": "exact"})).unwrap();
    assert!(PaymentPayload::from_header(&v3).is_err());
    let v1_body = br#"{"x402Version":2,"accepts":[]}"#;
    assert!(matches!(
        PaymentRequiredV1::from_json_slice(v1_body),
        Err(DecodeError::VersionMismatch { found: Some(2), .. })
    ));
}

#[test]
fn missing_required_fields_and_bad_amounts_are_rejected() {
    let mut base = serde_json::to_value(golden_requirement_v1()).unwrap();
    base.as_object_mut().unwrap().remove("payTo");
    let body = json!({"x402Version": 1, "error": "pay", "accepts": [base]});
    assert!(matches!(
        PaymentRequiredV1::from_json_slice(body.to_string().as_bytes()),
        Err(DecodeError::Json(_))
    ));
    for bad in [
        json!("-1"),
        json!(""),
        json!("1.5"),
        json!(10000),
        json!("0x10"),
        json!("340282366920938463463374607431768211456"),
    ] {
        let mut req = serde_json::to_value(requirement_v2(1)).unwrap();
        req["amount"] = bad.clone();
        assert!(
            serde_json::from_value::<PaymentRequirementsV2>(req).is_err(),
            "amount {bad} must be rejected"
        );
    }
    let mut req = serde_json::to_value(requirement_v2(1)).unwrap();
    req["maxTimeoutSeconds"] = json!(60.5);
    assert!(serde_json::from_value::<PaymentRequirementsV2>(req).is_err());

    let mut payload = serde_json::to_value(golden_payload_v1()).unwrap();
    payload["payload"]["authorization"]["validBefore"] = json!("-5");
    assert!(serde_json::from_value::<PaymentPayloadV1>(payload).is_err());
}

// ---------------------------------------------------------------------------------------------
// Sign then verify, and rejections

#[test]
fn sign_then_verify_v1_and_v2() {
    let req1 = requirement_v1(10_000);
    let p1 = signed_v1(&req1);
    assert_eq!(p1.payload.authorization.from, payer().address());
    assert_eq!(p1.payload.authorization.to, MERCHANT);
    assert_eq!(p1.payload.authorization.valid_after, NOW - 600);
    assert_eq!(p1.payload.authorization.valid_before, NOW + 60);
    assert_eq!(p1.payload.authorization.nonce, NONCE);
    let v = verify_v1(&p1, &req1, NOW).unwrap();
    assert_eq!(v.payer, payer().address());
    assert_eq!(v.value, 10_000);

    let req2 = requirement_v2(10_000);
    let p2 = signed_v2(&req2);
    let v = verify_v2(&p2, &req2, NOW + 59).unwrap();
    assert_eq!(v.payer, payer().address());
    assert_eq!(v.nonce, NONCE);
    // Signing is deterministic (RFC 6979): same inputs, same signature.
    assert_eq!(signed_v2(&req2).payload.signature, p2.payload.signature);
}

#[test]
fn tampered_value_is_rejected() {
    let req = requirement_v2(10_000);
    let mut p = signed_v2(&req);
    p.payload.authorization.value = 1;
    let err = verify_v2(&p, &req, NOW).unwrap_err();
    assert!(matches!(err, VerifyError::SignerMismatch { .. }), "{err:?}");
    assert_eq!(err.reason(), ErrorReason::InvalidExactEvmPayloadSignature);

    // Correctly signed but for a different amount than offered: value check names it.
    let p = signed_v2(&requirement_v2(9_999));
    let mut honest_accepted = p.clone();
    honest_accepted.accepted = req.clone();
    let err = verify_v2(&honest_accepted, &req, NOW).unwrap_err();
    assert_eq!(
        err,
        VerifyError::ValueMismatch {
            required: 10_000,
            found: 9_999
        }
    );
    assert_eq!(
        err.reason().as_str(),
        "invalid_exact_evm_payload_authorization_value_mismatch"
    );
    // ... and when `accepted` echoes the other amount, the echo mismatch is reported.
    let err = verify_v2(&p, &req, NOW).unwrap_err();
    assert_eq!(err, VerifyError::AcceptedMismatch { field: "amount" });

    // v1: less than maxAmountRequired is rejected; more is accepted.
    let low = signed_v1(&requirement_v1(9_999));
    let err = verify_v1(&low, &requirement_v1(10_000), NOW).unwrap_err();
    assert_eq!(
        err,
        VerifyError::ValueInsufficient {
            required: 10_000,
            found: 9_999
        }
    );
    assert_eq!(err.reason().as_str(), "invalid_exact_evm_payload_authorization_value");
    let high = signed_v1(&requirement_v1(10_001));
    assert_eq!(verify_v1(&high, &requirement_v1(10_000), NOW).unwrap().value, 10_001);
}

#[test]
fn tampered_recipient_is_rejected() {
    let req = requirement_v1(10_000);
    let mut p = signed_v1(&req);
    p.payload.authorization.to = address!("000000000000000000000000000000000000dEaD");
    let err = verify_v1(&p, &req, NOW).unwrap_err();
    assert_eq!(err.reason(), ErrorReason::InvalidExactEvmPayloadSignature);

    // Validly signed to someone else: recipient mismatch.
    let mut elsewhere = req.clone();
    elsewhere.pay_to = "0x000000000000000000000000000000000000dEaD".into();
    let p = signed_v1(&elsewhere);
    let err = verify_v1(&p, &req, NOW).unwrap_err();
    assert_eq!(
        err,
        VerifyError::RecipientMismatch {
            expected: MERCHANT,
            found: address!("000000000000000000000000000000000000dEaD")
        }
    );
    assert_eq!(err.reason().as_str(), "invalid_exact_evm_payload_recipient_mismatch");
}

#[test]
fn expired_and_future_windows_are_rejected() {
    let req = requirement_v2(10_000);
    let p = signed_v2(&req);
    let err = verify_v2(&p, &req, NOW + 60).unwrap_err();
    assert_eq!(
        err.reason(),
        ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore
    );
    let err = verify_v2(&p, &req, NOW - 600).unwrap_err();
    assert_eq!(err.reason(), ErrorReason::InvalidExactEvmPayloadAuthorizationValidAfter);
    assert!(verify_v2(&p, &req, NOW - 599).is_ok());
}

#[test]
fn wrong_network_scheme_and_version_are_rejected() {
    let req = requirement_v1(10_000);
    let p = signed_v1(&req);

    let mut other_net = p.clone();
    other_net.network = "base".into();
    let err = verify_v1(&other_net, &req, NOW).unwrap_err();
    assert_eq!(err.reason().as_str(), "invalid_network");

    // Requirements on a network this crate does not know.
    let mut unknown = req.clone();
    unknown.network = "ethereum-classic".into();
    let mut p_unknown = p.clone();
    p_unknown.network = "ethereum-classic".into();
    let err = verify_v1(&p_unknown, &unknown, NOW).unwrap_err();
    assert_eq!(err.reason(), ErrorReason::InvalidNetwork);

    // Signed for Base Sepolia but presented for Base mainnet requirements: different chain
    // id in the domain, so the signature does not recover the payer.
    let mut mainnet = req.clone();
    mainnet.network = "base".into();
    let err = verify_v1(&other_net, &mainnet, NOW).unwrap_err();
    assert_eq!(err.reason(), ErrorReason::InvalidExactEvmPayloadSignature);

    let mut other_scheme = p.clone();
    other_scheme.scheme = "upto".into();
    let err = verify_v1(&other_scheme, &req, NOW).unwrap_err();
    assert_eq!(err.reason().as_str(), "invalid_scheme");
    let mut upto_req = req.clone();
    upto_req.scheme = "upto".into();
    let err = verify_v1(&other_scheme, &upto_req, NOW).unwrap_err();
    assert_eq!(err.reason().as_str(), "invalid_scheme");

    let err = verify(
        &PaymentPayload::V1(p),
        &PaymentRequirements::V2(requirement_v2(10_000)),
        NOW,
    )
    .unwrap_err();
    assert_eq!(err.reason().as_str(), "invalid_x402_version");
}

#[test]
fn malformed_signatures_are_rejected() {
    let req = requirement_v2(10_000);
    let good = signed_v2(&req);

    let mut short = good.clone();
    short.payload.signature = Bytes::from(vec![1u8; 64]);
    assert_eq!(
        verify_v2(&short, &req, NOW).unwrap_err(),
        VerifyError::InvalidSignature(SignatureProblem::WrongLength { len_bytes: 64 })
    );

    let mut bad_v = good.clone();
    let mut bytes = bad_v.payload.signature.to_vec();
    bytes[64] = 5;
    bad_v.payload.signature = bytes.into();
    assert_eq!(
        verify_v2(&bad_v, &req, NOW).unwrap_err(),
        VerifyError::InvalidSignature(SignatureProblem::InvalidV(5))
    );

    // The malleable twin (s' = n - s, flipped parity) recovers the same key but is refused,
    // as the USDC contract refuses it.
    let sig = parse_signature_of(&good);
    let twin = Signature::new(sig.r(), secp256k1_order() - sig.s(), !sig.v());
    let mut malleable = good.clone();
    malleable.payload.signature = twin.as_bytes().to_vec().into();
    assert_eq!(
        verify_v2(&malleable, &req, NOW).unwrap_err(),
        VerifyError::InvalidSignature(SignatureProblem::HighS)
    );

    let mut zero = good.clone();
    zero.payload.signature = Bytes::from(vec![0u8; 65]);
    assert!(matches!(
        verify_v2(&zero, &req, NOW).unwrap_err(),
        VerifyError::InvalidSignature(_)
    ));
}

fn parse_signature_of(p: &PaymentPayloadV2) -> Signature {
    x402::exact_evm::parse_signature(&p.payload.signature).unwrap()
}

fn secp256k1_order() -> U256 {
    "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"
        .parse()
        .unwrap()
}

#[test]
fn requirement_problems_are_typed() {
    let mut no_extra = requirement_v2(1);
    no_extra.extra = None;
    assert_eq!(
        ExactEvmRequirement::from_v2(&no_extra),
        Err(RequirementError::MissingDomainField("name"))
    );
    let mut no_version = requirement_v2(1);
    no_version.extra = Some(json!({"name": "USDC"}));
    assert_eq!(
        ExactEvmRequirement::from_v2(&no_version),
        Err(RequirementError::MissingDomainField("version"))
    );
    let mut bad_pay_to = requirement_v2(1);
    bad_pay_to.pay_to = "merchant".into();
    assert!(matches!(
        ExactEvmRequirement::from_v2(&bad_pay_to),
        Err(RequirementError::InvalidPayTo(_))
    ));
    // Mixed case with a broken checksum is refused; all-lowercase is fine.
    assert_eq!(
        parse_evm_address("0x036cbd53842c5426634e7929541ec2318f3dcf7e"),
        Some(BASE_SEPOLIA_USDC)
    );
    assert_eq!(
        parse_evm_address("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
        Some(BASE_SEPOLIA_USDC)
    );
    assert_eq!(parse_evm_address("0x036CBD53842c5426634e7929541eC2318f3dCF7e"), None);
    assert_eq!(parse_evm_address("036cbd53842c5426634e7929541ec2318f3dcf7e"), None);

    let mut zero_timeout = requirement_v2(1);
    zero_timeout.max_timeout_seconds = 0;
    assert!(matches!(
        block_on(build_payment_v2(&zero_timeout, None, None, &payer(), NOW, NONCE)),
        Err(BuildError::ZeroTimeout)
    ));
    let r = requirement_v2(1);
    assert!(matches!(
        block_on(build_payment_v2(&r, None, None, &payer(), u64::MAX - 10, NONCE)),
        Err(BuildError::TimeOverflow { .. })
    ));
}

/// A remote signer that signs with a different key than it claims.
struct LyingSigner {
    claimed: Address,
    real: LocalKeySigner,
}

impl Signer for LyingSigner {
    fn address(&self) -> Address {
        self.claimed
    }
    async fn sign_digest(&self, digest: B256) -> Result<Signature, SignerError> {
        self.real.sign_digest(digest).await
    }
}

#[test]
fn misbehaving_signer_is_caught_before_sending() {
    let liar = LyingSigner {
        claimed: payer().address(),
        real: LocalKeySigner::from_bytes(&[0x22; 32]).unwrap(),
    };
    let err = block_on(build_payment_v1(&requirement_v1(1), &liar, NOW, NONCE)).unwrap_err();
    assert!(matches!(err, BuildError::SignerMismatch { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Selection

#[test]
fn selection_picks_first_payable_exact_requirement() {
    let wallet = WalletSupport::new().with(Network::BaseSepolia, BASE_SEPOLIA_USDC);
    let mut upto = requirement_v2(1);
    upto.scheme = "upto".into();
    let mut solana = requirement_v2(1);
    solana.network = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1".into();
    solana.asset = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU".into();
    let good = requirement_v2(7);
    let later = requirement_v2(8);
    let offered = vec![upto, solana, good.clone(), later];
    let selected = select_requirement(&offered, &wallet).unwrap();
    assert_eq!(selected.index, 2);
    assert_eq!(selected.requirement, &good);
    assert_eq!(selected.exact.amount, 7);
    assert_eq!(selected.exact.network, Network::BaseSepolia);
    assert_eq!(selected.requirement.version(), X402Version::V2);

    let v1 = vec![requirement_v1(3)];
    assert_eq!(select_requirement(&v1, &wallet).unwrap().exact.amount, 3);
}

#[test]
fn selection_errors_name_the_missing_capability() {
    let wallet = WalletSupport::new().with(Network::BaseSepolia, BASE_SEPOLIA_USDC);
    let empty: Vec<PaymentRequirementsV2> = vec![];
    assert_eq!(
        select_requirement(&empty, &wallet).unwrap_err(),
        SelectError::NothingOffered
    );

    let mut upto = requirement_v2(1);
    upto.scheme = "upto".into();
    assert_eq!(
        select_requirement(std::slice::from_ref(&upto), &wallet).unwrap_err(),
        SelectError::NoSupportedScheme {
            offered: vec!["upto".into()]
        }
    );

    let mut mainnet = requirement_v2(1);
    mainnet.network = "eip155:8453".into();
    assert!(matches!(
        select_requirement(&[upto.clone(), mainnet.clone()], &wallet).unwrap_err(),
        SelectError::NoSupportedNetwork { .. }
    ));

    let mut other_token = requirement_v2(1);
    other_token.asset = "0x000000000000000000000000000000000000dEaD".into();
    assert!(matches!(
        select_requirement(&[mainnet, other_token], &wallet).unwrap_err(),
        SelectError::NoSupportedAsset { .. }
    ));

    let mut no_domain = requirement_v2(1);
    no_domain.extra = None;
    assert_eq!(
        select_requirement(&[no_domain], &wallet).unwrap_err(),
        SelectError::Malformed {
            index: 0,
            error: RequirementError::MissingDomainField("name")
        }
    );
}
