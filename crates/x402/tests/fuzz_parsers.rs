//! Generated-input tests for the parsers that take untrusted bytes from merchants, agents and
//! facilitators: the base64 header codecs (`X-PAYMENT`, `PAYMENT-SIGNATURE`, `PAYMENT-REQUIRED`,
//! `X-PAYMENT-RESPONSE`/`PAYMENT-RESPONSE`), 402 JSON bodies, facilitator requests, atomic
//! amounts, requirement selection and payment verification.
//!
//! Properties, over arbitrary and mutated-valid inputs:
//! * nothing panics;
//! * every failure is a typed error ([`DecodeError`], [`AmountError`], [`SelectError`],
//!   [`VerifyError`]) whose variant matches the input (oversized input is `TooLarge`, a wrong
//!   `x402Version` is `VersionMismatch`, …);
//! * valid messages round-trip exactly through header and body encodings, and whatever a
//!   decoder accepts re-encodes to something it accepts again as the same value;
//! * selection agrees with an independent model; verification refuses any change to a signed
//!   field.
//!
//! Case counts are fixed per property (`CASES_*`), so the run time is bounded.

use alloy_primitives::{Address, Bytes, B256};
use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};
use x402::codec::{decode_header_bytes, HEADER_VALUE_BYTES_MAX, JSON_BODY_BYTES_MAX};
use x402::exact_evm::{parse_evm_address, BASE_SEPOLIA_USDC, EXACT_SCHEME};
use x402::select::OfferedRequirement;
use x402::*;

/// Cases for the cheap codec properties.
const CASES_CODEC: u32 = 1024;
/// Cases for properties that recover a secp256k1 signature per case (slower).
const CASES_VERIFY: u32 = 256;

fn config(cases: u32) -> Config {
    Config {
        cases,
        // No persistence files in the source tree; failures print their seed and input.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Arbitrary JSON, nested up to a few levels, with keys drawn partly from the x402 field names
/// so objects often look almost right.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "x402Version", "scheme", "network", "maxAmountRequired", "amount", "resource", "description",
            "payTo", "maxTimeoutSeconds", "asset", "extra", "accepts", "accepted", "payload", "signature",
            "authorization", "from", "to", "value", "validAfter", "validBefore", "nonce", "success",
            "transaction", "errorReason", "url", "paymentPayload", "paymentRequirements", "name", "version",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Fractions exact in binary and short in decimal, so text round trips are exact.
        any::<i32>().prop_map(|i| Value::from(f64::from(i) / 8.0)),
        ".{0,24}".prop_map(Value::String),
        "[0-9]{0,45}".prop_map(Value::String),
        "0x[0-9a-fA-F]{0,70}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn arb_address() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>().prop_map(Address::from)
}

/// An address as merchants write it: checksummed, all lowercase or all uppercase.
fn arb_address_text() -> impl Strategy<Value = String> {
    (arb_address(), 0..3u8).prop_map(|(a, form)| match form {
        0 => a.to_checksum(None),
        1 => format!("{a:#x}"),
        _ => format!("0x{}", hex_upper(a.as_slice())),
    })
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Free text without control characters (descriptions, URLs, references).
fn arb_text() -> impl Strategy<Value = String> {
    "[^\\x00-\\x1f]{0,40}"
}

/// Fields a newer sender might add; never a name the types know.
fn arb_unknown_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x-[a-z]{1,8}", arb_json(), 0..3).prop_map(|m| m.into_iter().collect())
}

/// `extra` as a JSON object (the types read `null` as absent, so `Some(null)` cannot round-trip).
fn arb_extra() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        3 => (arb_text(), "[0-9]{1,2}").prop_map(|(name, version)| Some(json!({"name": name, "version": version}))),
        1 => prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..4)
            .prop_map(|m| Some(Value::Object(m.into_iter().collect()))),
    ]
}

fn arb_network(version: X402Version) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(Network::ALL.to_vec()).prop_map(move |n| n.wire_name(version).to_owned()),
        1 => arb_text(),
    ]
}

fn arb_scheme() -> impl Strategy<Value = String> {
    prop_oneof![4 => Just(EXACT_SCHEME.to_owned()), 1 => "[a-z]{0,8}"]
}

fn arb_requirement_v1() -> impl Strategy<Value = PaymentRequirementsV1> {
    (
        (
            arb_scheme(),
            arb_network(X402Version::V1),
            any::<u128>(),
            arb_text(),
            arb_text(),
        ),
        (
            prop::option::of(arb_text()),
            prop::option::of(arb_json().prop_filter("null reads as absent", |v| !v.is_null())),
        ),
        (
            arb_address_text(),
            any::<u64>(),
            arb_address_text(),
            arb_extra(),
            arb_unknown_fields(),
        ),
    )
        .prop_map(
            |(
                (scheme, network, max_amount_required, resource, description),
                (mime_type, output_schema),
                (pay_to, max_timeout_seconds, asset, extra, unknown_fields),
            )| PaymentRequirementsV1 {
                scheme,
                network,
                max_amount_required,
                resource,
                description,
                mime_type,
                output_schema,
                pay_to,
                max_timeout_seconds,
                asset,
                extra,
                unknown_fields,
            },
        )
}

fn arb_requirement_v2() -> impl Strategy<Value = PaymentRequirementsV2> {
    (
        arb_scheme(),
        arb_network(X402Version::V2),
        any::<u128>(),
        arb_address_text(),
        arb_address_text(),
        any::<u64>(),
        arb_extra(),
        arb_unknown_fields(),
    )
        .prop_map(
            |(scheme, network, amount, asset, pay_to, max_timeout_seconds, extra, unknown_fields)| {
                PaymentRequirementsV2 {
                    scheme,
                    network,
                    amount,
                    asset,
                    pay_to,
                    max_timeout_seconds,
                    extra,
                    unknown_fields,
                }
            },
        )
}

fn arb_resource() -> impl Strategy<Value = ResourceInfo> {
    (
        arb_text(),
        prop::option::of(arb_text()),
        prop::option::of(arb_text()),
        arb_unknown_fields(),
    )
        .prop_map(|(url, description, mime_type, unknown_fields)| ResourceInfo {
            url,
            description,
            mime_type,
            unknown_fields,
        })
}

fn arb_object_or_none() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(
        prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    )
}

fn arb_payment_required_v1() -> impl Strategy<Value = PaymentRequiredV1> {
    (
        prop::option::of(arb_text()),
        prop::collection::vec(arb_requirement_v1(), 0..4),
    )
        .prop_map(|(error, accepts)| PaymentRequiredV1 {
            x402_version: X402Version::V1,
            error,
            accepts,
        })
}

fn arb_payment_required_v2() -> impl Strategy<Value = PaymentRequiredV2> {
    (
        prop::option::of(arb_text()),
        arb_resource(),
        prop::collection::vec(arb_requirement_v2(), 0..4),
        arb_object_or_none(),
    )
        .prop_map(|(error, resource, accepts, extensions)| PaymentRequiredV2 {
            x402_version: X402Version::V2,
            error,
            resource,
            accepts,
            extensions,
        })
}

fn arb_exact_payload() -> impl Strategy<Value = ExactEvmPayload> {
    (
        prop::collection::vec(any::<u8>(), 0..80),
        arb_address(),
        arb_address(),
        any::<u128>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(signature, from, to, value, valid_after, valid_before, nonce)| ExactEvmPayload {
                signature: Bytes::from(signature),
                authorization: ExactEvmAuthorization {
                    from,
                    to,
                    value,
                    valid_after,
                    valid_before,
                    nonce: B256::from(nonce),
                },
            },
        )
}

fn arb_payment_payload_v1() -> impl Strategy<Value = PaymentPayloadV1> {
    (arb_scheme(), arb_network(X402Version::V1), arb_exact_payload()).prop_map(|(scheme, network, payload)| {
        PaymentPayloadV1 {
            x402_version: X402Version::V1,
            scheme,
            network,
            payload,
        }
    })
}

fn arb_payment_payload_v2() -> impl Strategy<Value = PaymentPayloadV2> {
    (
        prop::option::of(arb_resource()),
        arb_requirement_v2(),
        arb_exact_payload(),
        arb_object_or_none(),
    )
        .prop_map(|(resource, accepted, payload, extensions)| PaymentPayloadV2 {
            x402_version: X402Version::V2,
            resource,
            accepted,
            payload,
            extensions,
        })
}

fn arb_settlement() -> impl Strategy<Value = SettlementResponse> {
    (
        any::<bool>(),
        prop::option::of(arb_text()),
        arb_text(),
        arb_text(),
        prop::option::of(arb_text()),
        prop::option::of(any::<u128>()),
        arb_object_or_none(),
    )
        .prop_map(
            |(success, error_reason, transaction, network, payer, amount, extensions)| SettlementResponse {
                success,
                error_reason,
                transaction,
                network,
                payer,
                amount,
                extensions,
            },
        )
}

fn arb_facilitator_request() -> impl Strategy<Value = FacilitatorRequest> {
    prop_oneof![
        (arb_payment_payload_v1(), arb_requirement_v1()).prop_map(|(p, r)| FacilitatorRequest {
            x402_version: X402Version::V1,
            payment_payload: PaymentPayload::V1(p),
            payment_requirements: PaymentRequirements::V1(r),
        }),
        (arb_payment_payload_v2(), arb_requirement_v2()).prop_map(|(p, r)| FacilitatorRequest {
            x402_version: X402Version::V2,
            payment_payload: PaymentPayload::V2(p),
            payment_requirements: PaymentRequirements::V2(r),
        }),
    ]
}

/// A change to the JSON text of a valid message.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace one byte.
    SetByte { at: prop::sample::Index, byte: u8 },
    /// Keep a prefix.
    Truncate { at: prop::sample::Index },
    /// Insert bytes.
    Insert { at: prop::sample::Index, bytes: Vec<u8> },
    /// Remove one member of the top-level object, or of an object one level down.
    DropField { pick: prop::sample::Index, nested: bool },
    /// Replace a member's value by arbitrary JSON.
    ReplaceValue {
        pick: prop::sample::Index,
        nested: bool,
        value: Value,
    },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        any::<prop::sample::Index>().prop_map(|at| Mutation::Truncate { at }),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(pick, nested)| Mutation::DropField { pick, nested }),
        (any::<prop::sample::Index>(), any::<bool>(), arb_json())
            .prop_map(|(pick, nested, value)| Mutation::ReplaceValue { pick, nested, value }),
    ]
}

/// The object a structural mutation edits: the top level, or (nested) its first object member.
fn target_object<'a>(
    root: &'a mut Value,
    pick: &prop::sample::Index,
    nested: bool,
) -> Option<&'a mut Map<String, Value>> {
    let top = root.as_object_mut()?;
    if !nested {
        return Some(top);
    }
    let objects: Vec<String> = top
        .iter()
        .filter(|(_, v)| v.is_object())
        .map(|(k, _)| k.clone())
        .collect();
    if objects.is_empty() {
        return None;
    }
    let key = &objects[pick.index(objects.len())];
    top.get_mut(key)?.as_object_mut()
}

fn mutate(json: &[u8], mutation: &Mutation) -> Vec<u8> {
    let mut bytes = json.to_vec();
    match mutation {
        Mutation::SetByte { at, byte } if !bytes.is_empty() => {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        Mutation::SetByte { .. } => {}
        Mutation::Truncate { at } => bytes.truncate(at.index(bytes.len() + 1)),
        Mutation::Insert { at, bytes: extra } => {
            let i = at.index(bytes.len() + 1);
            bytes.splice(i..i, extra.iter().copied());
        }
        Mutation::DropField { pick, nested } | Mutation::ReplaceValue { pick, nested, .. } => {
            let Ok(mut root) = serde_json::from_slice::<Value>(json) else {
                return bytes;
            };
            if let Some(object) = target_object(&mut root, pick, *nested) {
                let keys: Vec<String> = object.keys().cloned().collect();
                if !keys.is_empty() {
                    let key = &keys[pick.index(keys.len())];
                    match mutation {
                        Mutation::ReplaceValue { value, .. } => {
                            object.insert(key.clone(), value.clone());
                        }
                        _ => {
                            object.remove(key);
                        }
                    }
                }
            }
            bytes = serde_json::to_vec(&root).unwrap_or(bytes);
        }
    }
    bytes
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64_unpadded(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Checks shared by every message type

/// `again` (decoded from `value`'s encoding) equals `value`, except that a number outside the
/// integers (a float in free-form JSON such as `outputSchema` or unknown fields) may come back
/// one ulp off: serde_json's default float parsing is fast, not correctly rounded (found by a
/// CI run: 1.3063356670616507e20 came back as ...509e20). Every typed field must match exactly.
fn check_same<M>(again: &M, value: &M) -> Result<(), TestCaseError>
where
    M: X402Message + PartialEq + std::fmt::Debug,
{
    if again == value {
        return Ok(());
    }
    let json = |m: &M| -> Result<Value, TestCaseError> {
        let bytes = m
            .to_json_vec()
            .map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(format!("re-parse: {e}")))
    };
    let (a, b) = (json(again)?, json(value)?);
    prop_assert!(
        floats_within_an_ulp(&a, &b),
        "round trip changed the message: {again:?} != {value:?}"
    );
    Ok(())
}

fn floats_within_an_ulp(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 2.0 * f64::EPSILON * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| floats_within_an_ulp(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| floats_within_an_ulp(v, w)))
        }
        _ => a == b,
    }
}

/// Decodes `json` (as a body and as a header) and checks the outcome is coherent: an accepted
/// value re-encodes and decodes to itself; a refusal is the typed error the input calls for.
fn check_decoding<M>(json: &[u8]) -> Result<(), TestCaseError>
where
    M: X402Message + PartialEq + std::fmt::Debug,
{
    let from_body = M::from_json_slice(json);
    let from_header = M::from_header(&b64(json));
    match (&from_body, &from_header) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "header and body decoders disagree"),
        (Err(_), Err(_)) => {}
        _ => prop_assert!(
            false,
            "header and body decoders disagree: body {from_body:?}, header {from_header:?}"
        ),
    }
    match from_body {
        Ok(value) => {
            let header = value
                .to_header()
                .map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
            let again = M::from_header(&header).map_err(|e| TestCaseError::fail(format!("re-decode: {e}")))?;
            check_same::<M>(&again, &value)?;
            let body = value
                .to_json_vec()
                .map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
            let again = M::from_json_slice(&body).map_err(|e| TestCaseError::fail(format!("re-decode: {e}")))?;
            check_same::<M>(&again, &value)?;
        }
        Err(DecodeError::TooLarge { len_bytes, limit_bytes }) => {
            prop_assert!(len_bytes > limit_bytes);
        }
        Err(DecodeError::Base64(e)) => prop_assert!(false, "valid base64 refused as base64: {e}"),
        Err(DecodeError::Json(_)) => {}
        Err(DecodeError::VersionMismatch { expected, found }) => {
            prop_assert_eq!(M::EXPECTED_VERSION, Some(expected));
            let actual = serde_json::from_slice::<Value>(json)
                .ok()
                .and_then(|v| v.get("x402Version").and_then(Value::as_u64));
            prop_assert_eq!(found, actual);
            prop_assert_ne!(found, Some(u64::from(expected.as_u8())));
        }
    }
    Ok(())
}

/// A valid message survives every encoding the codec promises to accept.
fn check_round_trip<M>(value: &M) -> Result<(), TestCaseError>
where
    M: X402Message + PartialEq + std::fmt::Debug,
{
    let json = value.to_json_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let header = value.to_header().map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&header, &b64(&json), "headers are padded standard base64 of the JSON");
    let candidates = [header.clone(), b64_unpadded(&json), format!("  {header}\t\r\n")];
    for text in &candidates {
        match M::from_header(text) {
            Ok(decoded) => prop_assert_eq!(&decoded, value),
            Err(e) => prop_assert!(false, "valid header {text:?} refused: {e}"),
        }
    }
    match M::from_json_slice(&json) {
        Ok(decoded) => prop_assert_eq!(&decoded, value),
        Err(e) => prop_assert!(false, "valid body refused: {e}"),
    }
    Ok(())
}

/// Mutated valid input: no panic, coherent outcome.
fn check_mutated<M>(value: &M, mutation: &Mutation) -> Result<(), TestCaseError>
where
    M: X402Message + PartialEq + std::fmt::Debug,
{
    let json = value.to_json_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
    check_decoding::<M>(&mutate(&json, mutation))
}

/// Every decoder on the same JSON.
fn check_all_decoders(json: &[u8]) -> Result<(), TestCaseError> {
    check_decoding::<PaymentRequiredV1>(json)?;
    check_decoding::<PaymentRequiredV2>(json)?;
    check_decoding::<PaymentPayloadV1>(json)?;
    check_decoding::<PaymentPayloadV2>(json)?;
    check_decoding::<PaymentPayload>(json)?;
    check_decoding::<SettlementResponse>(json)?;
    check_decoding::<VerifyResponse>(json)?;
    check_decoding::<SupportedResponse>(json)?;
    check_decoding::<FacilitatorRequest>(json)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Header text and JSON from nowhere

proptest! {
    #![proptest_config(config(CASES_CODEC))]

    /// Any header text: refused with a typed error or decoded; never a panic.
    #[test]
    fn arbitrary_header_text_is_refused_or_decoded(text in prop_oneof![
        ".{0,200}",
        "[A-Za-z0-9+/=\\s]{0,200}",
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| b64(&b)),
    ]) {
        match decode_header_bytes(&text) {
            Ok(bytes) => check_all_decoders(&bytes)?,
            Err(DecodeError::Base64(_)) => {
                prop_assert!(PaymentPayload::from_header(&text).is_err());
                prop_assert!(matches!(PaymentRequiredV2::from_header(&text), Err(DecodeError::Base64(_))));
                prop_assert!(matches!(SettlementResponse::from_header(&text), Err(DecodeError::Base64(_))));
            }
            Err(e) => prop_assert!(false, "short header refused for {e}"),
        }
    }

    /// Arbitrary JSON documents, as bodies and as headers, through every decoder.
    #[test]
    fn arbitrary_json_is_refused_or_round_trips(value in arb_json()) {
        let json = serde_json::to_vec(&value).unwrap();
        check_all_decoders(&json)?;
    }

    /// Arbitrary bytes as a body: refused with a typed error or decoded.
    #[test]
    fn arbitrary_body_bytes_are_refused_or_decoded(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_all_decoders(&bytes)?;
    }

    /// The x402Version check names what it found, for every version that is not the one expected.
    #[test]
    fn wrong_version_is_a_version_mismatch(message in arb_payment_required_v2(), version in any::<u64>()) {
        prop_assume!(version != 2);
        let mut value = serde_json::to_value(&message).unwrap();
        value["x402Version"] = Value::from(version);
        let header = b64(&serde_json::to_vec(&value).unwrap());
        match PaymentRequiredV2::from_header(&header) {
            Err(DecodeError::VersionMismatch { expected: X402Version::V2, found }) => prop_assert_eq!(found, Some(version)),
            other => prop_assert!(false, "expected VersionMismatch, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Valid messages round-trip; mutated ones are refused or decode coherently

proptest! {
    #![proptest_config(config(CASES_CODEC))]

    #[test]
    fn payment_required_v1_body(message in arb_payment_required_v1(), mutation in arb_mutation()) {
        check_round_trip(&message)?;
        check_mutated(&message, &mutation)?;
    }

    #[test]
    fn payment_required_v2_header(message in arb_payment_required_v2(), mutation in arb_mutation()) {
        check_round_trip(&message)?;
        check_mutated(&message, &mutation)?;
    }

    #[test]
    fn x_payment_v1_header(message in arb_payment_payload_v1(), mutation in arb_mutation()) {
        check_round_trip(&message)?;
        check_mutated(&message, &mutation)?;
        // The version-dispatching decoder reads the same header as the same payment.
        let any = PaymentPayload::from_header(&message.to_header().unwrap()).unwrap();
        prop_assert_eq!(any, PaymentPayload::V1(message.clone()));
        check_mutated(&PaymentPayload::V1(message), &mutation)?;
    }

    #[test]
    fn payment_signature_v2_header(message in arb_payment_payload_v2(), mutation in arb_mutation()) {
        check_round_trip(&message)?;
        check_mutated(&message, &mutation)?;
        let any = PaymentPayload::from_header(&message.to_header().unwrap()).unwrap();
        prop_assert_eq!(any, PaymentPayload::V2(message.clone()));
        check_mutated(&PaymentPayload::V2(message), &mutation)?;
    }

    #[test]
    fn payment_response_header(message in arb_settlement(), mutation in arb_mutation()) {
        check_round_trip(&message)?;
        check_mutated(&message, &mutation)?;
    }

    #[test]
    fn facilitator_request_body(message in arb_facilitator_request(), mutation in arb_mutation()) {
        check_round_trip(&message)?;
        check_mutated(&message, &mutation)?;
    }

    /// Base64 text of a valid header, mutated: a typed refusal or a coherent decode.
    #[test]
    fn mutated_header_text(message in arb_payment_payload_v2(), mutation in arb_mutation()) {
        let header = message.to_header().unwrap();
        let mutated = String::from_utf8_lossy(&mutate(header.as_bytes(), &mutation)).into_owned();
        match PaymentPayloadV2::from_header(&mutated) {
            Ok(decoded) => {
                let again = PaymentPayloadV2::from_header(&decoded.to_header().unwrap()).unwrap();
                prop_assert_eq!(again, decoded);
            }
            Err(DecodeError::TooLarge { .. }) => prop_assert!(false, "a short header was refused as too large"),
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Size limits

#[test]
fn oversized_inputs_are_refused_before_parsing() {
    // Valid base64 one byte over the limit: refused for size, not decoded.
    let header = "A".repeat(HEADER_VALUE_BYTES_MAX + 4);
    assert!(matches!(
        PaymentPayload::from_header(&header),
        Err(DecodeError::TooLarge { len_bytes, limit_bytes }) if len_bytes == HEADER_VALUE_BYTES_MAX + 4 && limit_bytes == HEADER_VALUE_BYTES_MAX
    ));
    // Surrounding whitespace does not count against the limit.
    let padded = format!("   {}   ", "A".repeat(HEADER_VALUE_BYTES_MAX));
    assert!(!matches!(
        decode_header_bytes(&padded),
        Err(DecodeError::TooLarge { .. })
    ));
    // A JSON body over the limit, valid JSON otherwise.
    let mut body = b"[".to_vec();
    body.extend(vec![b' '; JSON_BODY_BYTES_MAX]);
    body.push(b']');
    assert!(matches!(
        PaymentRequiredV1::from_json_slice(&body),
        Err(DecodeError::TooLarge { .. })
    ));
    // Deep nesting inside the limit is a JSON error (serde_json's recursion limit), not a crash.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        PaymentRequiredV2::from_json_slice(deep.as_bytes()),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        PaymentPayload::from_header(&b64(deep.as_bytes())),
        Err(DecodeError::Json(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Atomic amounts and addresses (x402's own parsers)

proptest! {
    #![proptest_config(config(CASES_CODEC))]

    #[test]
    fn atomic_amounts_round_trip(value in any::<u128>(), zeros in 0usize..30) {
        let text = format!("{}{value}", "0".repeat(zeros));
        prop_assert_eq!(parse_atomic_amount(&text), Ok(value));
        prop_assert_eq!(parse_unix_seconds(&text), u64::try_from(value).map_err(|_| AmountError::Overflow { bits: 64 }));
    }

    /// Any text: a value only for plain ASCII digits that fit; otherwise the matching error.
    #[test]
    fn atomic_amount_text_is_refused_with_its_reason(text in prop_oneof![".{0,50}", "[-+]?[0-9]{0,90}", "[0-9 .,eEx_]{0,20}"]) {
        let result = parse_atomic_amount(&text);
        let all_digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match result {
            Ok(v) => {
                prop_assert!(all_digits);
                prop_assert_eq!(Ok(v), text.parse::<u128>());
            }
            Err(AmountError::Empty) => prop_assert!(text.is_empty()),
            Err(AmountError::Signed) => prop_assert!(text.starts_with('-') || text.starts_with('+')),
            Err(AmountError::NonDigit { index }) => {
                prop_assert!(!text.as_bytes()[index].is_ascii_digit());
                prop_assert!(text.as_bytes()[..index].iter().all(u8::is_ascii_digit));
            }
            Err(AmountError::TooLong { len_bytes, limit_bytes }) => {
                prop_assert_eq!(len_bytes, text.len());
                prop_assert!(len_bytes > limit_bytes);
            }
            Err(AmountError::Overflow { bits }) => {
                prop_assert_eq!(bits, 128);
                prop_assert!(all_digits);
                prop_assert!(text.trim_start_matches('0').len() >= 39);
            }
        }
    }

    /// Address parsing: `0x` + 40 hex digits, with a valid checksum when the case is mixed.
    #[test]
    fn evm_addresses(address in arb_address(), text in ".{0,50}", flip in any::<prop::sample::Index>()) {
        let checksummed = address.to_checksum(None);
        prop_assert_eq!(parse_evm_address(&checksummed), Some(address));
        prop_assert_eq!(parse_evm_address(&format!("{address:#x}")), Some(address));
        prop_assert_eq!(parse_evm_address(&format!("0x{}", hex_upper(address.as_slice()))), Some(address));
        // Flipping the case of one letter of a checksummed address breaks the checksum, unless
        // that leaves the digits all one case (then no checksum is claimed).
        let mut chars: Vec<char> = checksummed.chars().collect();
        let letters: Vec<usize> = (2..chars.len()).filter(|&i| chars[i].is_ascii_alphabetic()).collect();
        if !letters.is_empty() {
            let i = letters[flip.index(letters.len())];
            chars[i] = if chars[i].is_ascii_uppercase() { chars[i].to_ascii_lowercase() } else { chars[i].to_ascii_uppercase() };
            let flipped: String = chars.into_iter().collect();
            let digits = &flipped[2..];
            let one_case = !digits.bytes().any(|b| b.is_ascii_lowercase()) || !digits.bytes().any(|b| b.is_ascii_uppercase());
            match parse_evm_address(&flipped) {
                Some(parsed) => {
                    prop_assert!(one_case, "a bad checksum was accepted: {flipped}");
                    prop_assert_eq!(parsed, address);
                }
                None => prop_assert!(!one_case),
            }
        }
        // Arbitrary text never panics, and a parsed address prints back to the same digits.
        if let Some(parsed) = parse_evm_address(&text) {
            prop_assert_eq!(&format!("{parsed:#x}")[2..], text[2..].to_ascii_lowercase());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requirement selection against a model

/// What a generated requirement looks like to the model.
fn wallet() -> WalletSupport {
    WalletSupport::new().with(Network::BaseSepolia, BASE_SEPOLIA_USDC).with(
        Network::Base,
        alloy_primitives::address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
    )
}

/// Requirements that are often payable by [`wallet`]: known assets, sometimes malformed.
fn arb_offer_v2() -> impl Strategy<Value = PaymentRequirementsV2> {
    let asset = prop_oneof![
        3 => Just(BASE_SEPOLIA_USDC.to_checksum(None)),
        1 => Just("0x833589fcd6edb6e08f4c7c32d4f71b54bda02913".to_owned()),
        1 => arb_address_text(),
        1 => arb_text(),
    ];
    let pay_to = prop_oneof![4 => arb_address_text(), 1 => arb_text()];
    (arb_requirement_v2(), asset, pay_to).prop_map(|(mut r, asset, pay_to)| {
        r.asset = asset;
        r.pay_to = pay_to;
        r
    })
}

/// The model: the first requirement that is exact, on a supported network, for a supported
/// asset, and well-formed; otherwise the furthest stage any requirement reached.
fn model_select<R: OfferedRequirement>(offered: &[R], wallet: &WalletSupport) -> Result<usize, SelectError> {
    if offered.is_empty() {
        return Err(SelectError::NothingOffered);
    }
    let mut stage_reached = 0u8; // 1 scheme, 2 network, 3 asset, 4 malformed
    let mut first_malformed = None;
    for (index, r) in offered.iter().enumerate() {
        if r.scheme() != "exact" {
            stage_reached = stage_reached.max(1);
            continue;
        }
        let Some(network) = Network::from_wire(r.network(), r.version()).filter(|n| wallet.supports_network(*n)) else {
            stage_reached = stage_reached.max(2);
            continue;
        };
        if !parse_evm_address(r.asset()).is_some_and(|a| wallet.supports(network, a)) {
            stage_reached = stage_reached.max(3);
            continue;
        }
        match r.to_exact_evm() {
            Ok(_) => return Ok(index),
            Err(error) => {
                stage_reached = 4;
                first_malformed.get_or_insert(SelectError::Malformed { index, error });
            }
        }
    }
    Err(match stage_reached {
        4 => first_malformed.unwrap_or(SelectError::NothingOffered),
        3 => SelectError::NoSupportedAsset { offered: vec![] },
        2 => SelectError::NoSupportedNetwork { offered: vec![] },
        _ => SelectError::NoSupportedScheme { offered: vec![] },
    })
}

fn same_kind(a: &SelectError, b: &SelectError) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
        && match (a, b) {
            (SelectError::Malformed { index: i, error: e }, SelectError::Malformed { index: j, error: f }) => {
                i == j && e == f
            }
            _ => true,
        }
}

proptest! {
    #![proptest_config(config(CASES_CODEC))]

    #[test]
    fn selection_matches_the_model_v2(offered in prop::collection::vec(arb_offer_v2(), 0..6)) {
        let wallet = wallet();
        let got = select_requirement(&offered, &wallet);
        match (model_select(&offered, &wallet), got) {
            (Ok(index), Ok(selected)) => {
                prop_assert_eq!(selected.index, index);
                prop_assert_eq!(selected.requirement, &offered[index]);
                prop_assert_eq!(Ok(selected.exact.clone()), ExactEvmRequirement::from_v2(&offered[index]));
                prop_assert!(wallet.supports(selected.exact.network, selected.exact.asset));
            }
            (Err(expected), Err(actual)) => prop_assert!(same_kind(&expected, &actual), "model {expected:?}, got {actual:?}"),
            (expected, actual) => prop_assert!(false, "model {expected:?}, got {actual:?}"),
        }
    }

    /// v1 requirements straight from an arbitrary (mostly garbage) 402 body.
    #[test]
    fn selection_matches_the_model_v1(body in arb_payment_required_v1()) {
        let wallet = wallet();
        let got = select_requirement(&body.accepts, &wallet);
        match (model_select(&body.accepts, &wallet), got) {
            (Ok(index), Ok(selected)) => prop_assert_eq!(selected.index, index),
            (Err(expected), Err(actual)) => prop_assert!(same_kind(&expected, &actual), "model {expected:?}, got {actual:?}"),
            (expected, actual) => prop_assert!(false, "model {expected:?}, got {actual:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verification of mutated signed payments

const NOW: u64 = 1_750_000_000;

fn signed_v2() -> (PaymentPayloadV2, PaymentRequirementsV2) {
    let requirement = PaymentRequirementsV2 {
        scheme: "exact".into(),
        network: "eip155:84532".into(),
        amount: 10_000,
        asset: BASE_SEPOLIA_USDC.to_checksum(None),
        pay_to: alloy_primitives::address!("209693Bc6afc0C5328bA36FaF03C514EF312287C").to_checksum(None),
        max_timeout_seconds: 60,
        extra: Some(json!({"name": "USDC", "version": "2"})),
        unknown_fields: Default::default(),
    };
    let signer = LocalKeySigner::from_bytes(&[0x22; 32]).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let payload = runtime
        .block_on(build_payment_v2(
            &requirement,
            None,
            None,
            &signer,
            NOW,
            B256::repeat_byte(7),
        ))
        .unwrap();
    (payload, requirement)
}

/// A change to one signed or checked part of a valid v2 payment.
#[derive(Debug, Clone)]
enum Tamper {
    SignatureByte { at: prop::sample::Index, xor: u8 },
    SignatureLength { len: usize },
    From(Address),
    To(Address),
    Value(u128),
    ValidAfter(u64),
    ValidBefore(u64),
    Nonce([u8; 32]),
    AcceptedAmount(u128),
    AcceptedPayTo(Address),
}

fn arb_tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(at, xor)| Tamper::SignatureByte { at, xor }),
        (0usize..130)
            .prop_filter("not 65", |l| *l != 65)
            .prop_map(|len| Tamper::SignatureLength { len }),
        arb_address().prop_map(Tamper::From),
        arb_address().prop_map(Tamper::To),
        any::<u128>().prop_map(Tamper::Value),
        any::<u64>().prop_map(Tamper::ValidAfter),
        any::<u64>().prop_map(Tamper::ValidBefore),
        any::<[u8; 32]>().prop_map(Tamper::Nonce),
        any::<u128>().prop_map(Tamper::AcceptedAmount),
        arb_address().prop_map(Tamper::AcceptedPayTo),
    ]
}

proptest! {
    #![proptest_config(config(CASES_VERIFY))]

    /// The untouched payment verifies; any change to what it signs or echoes is refused with a
    /// typed error (never accepted, never a panic), also after a trip through the header codec.
    #[test]
    fn tampered_payments_are_refused(tamper in arb_tamper()) {
        let (payload, requirement) = signed_v2();
        let requirements = PaymentRequirements::V2(requirement);
        prop_assert!(verify(&PaymentPayload::V2(payload.clone()), &requirements, NOW).is_ok());

        let mut tampered = payload.clone();
        let auth = &mut tampered.payload.authorization;
        match &tamper {
            Tamper::SignatureByte { at, xor } => {
                let mut bytes = tampered.payload.signature.to_vec();
                let i = at.index(bytes.len());
                bytes[i] ^= xor;
                tampered.payload.signature = Bytes::from(bytes);
            }
            Tamper::SignatureLength { len } => {
                let mut bytes = tampered.payload.signature.to_vec();
                bytes.resize(*len, 0);
                tampered.payload.signature = Bytes::from(bytes);
            }
            Tamper::From(a) => auth.from = *a,
            Tamper::To(a) => auth.to = *a,
            Tamper::Value(v) => auth.value = *v,
            Tamper::ValidAfter(t) => auth.valid_after = *t,
            Tamper::ValidBefore(t) => auth.valid_before = *t,
            Tamper::Nonce(n) => auth.nonce = B256::from(*n),
            Tamper::AcceptedAmount(v) => tampered.accepted.amount = *v,
            Tamper::AcceptedPayTo(a) => tampered.accepted.pay_to = a.to_checksum(None),
        }
        prop_assume!(tampered != payload);
        let decoded = PaymentPayload::from_header(&tampered.to_header().unwrap()).unwrap();
        prop_assert_eq!(&decoded, &PaymentPayload::V2(tampered.clone()));
        match verify(&decoded, &requirements, NOW) {
            Ok(v) => prop_assert!(false, "tampered payment {tamper:?} verified: {v:?}"),
            Err(e) => {
                // The reason is one of the x402 codes, and the kind fits the change.
                let _ = e.reason();
                // The echo is checked before the signature; every authorization field is signed.
                match tamper {
                    Tamper::AcceptedAmount(_) | Tamper::AcceptedPayTo(_) => prop_assert!(
                        matches!(e, VerifyError::AcceptedMismatch { .. }),
                        "{tamper:?} gave {e:?}"
                    ),
                    _ => prop_assert!(
                        matches!(e, VerifyError::InvalidSignature(_) | VerifyError::SignerMismatch { .. }),
                        "{tamper:?} gave {e:?}"
                    ),
                }
            }
        }
    }
}
