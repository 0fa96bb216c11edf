//! Request fields documented as objects take a JSON object or null, never an array
//! (found by schemathesis: serde reads a struct from an array by position).

use api::{AuthorizeRequest, BatchAuthorizeRequest, CaptureRequest};

#[test]
fn context_and_receipt_refuse_arrays() {
    let arrays = [
        r#"{"amount":"1","tool":"t","context":[null,null]}"#,
        r#"{"amount":"1","tool":"t","context":["trace","call","note"]}"#,
        r#"{"amount":"1","tool":"t","context":[]}"#,
        r#"{"amount":"1","tool":"t","context":"text"}"#,
    ];
    for body in arrays {
        assert!(
            serde_json::from_str::<AuthorizeRequest>(body).is_err(),
            "{body} was accepted"
        );
    }
    assert!(serde_json::from_str::<CaptureRequest>(r#"{"receipt":["p","s"]}"#).is_err());
    assert!(serde_json::from_str::<BatchAuthorizeRequest>(
        r#"{"items":[{"session_id":"s","amount":"1","tool":"t","context":[null]}]}"#
    )
    .is_err());
}

#[test]
fn context_and_receipt_take_objects_null_or_nothing() {
    let with =
        serde_json::from_str::<AuthorizeRequest>(r#"{"amount":"1","tool":"t","context":{"trace_id":"x"}}"#).unwrap();
    assert_eq!(with.context.unwrap().trace_id.as_deref(), Some("x"));
    let null = serde_json::from_str::<AuthorizeRequest>(r#"{"amount":"1","tool":"t","context":null}"#).unwrap();
    assert!(null.context.is_none());
    let absent = serde_json::from_str::<AuthorizeRequest>(r#"{"amount":"1","tool":"t"}"#).unwrap();
    assert!(absent.context.is_none());
    let receipt = serde_json::from_str::<CaptureRequest>(r#"{"receipt":{"signature":"0x1"}}"#).unwrap();
    assert_eq!(receipt.receipt.unwrap().signature.as_deref(), Some("0x1"));
    // Unknown fields inside are still refused.
    assert!(serde_json::from_str::<AuthorizeRequest>(r#"{"amount":"1","tool":"t","context":{"x":1}}"#).is_err());
    // The wire form written by the client reads back unchanged.
    let request = AuthorizeRequest {
        amount: Some("1".into()),
        tool: "t".into(),
        context: Some(api::DecisionContext {
            note: Some("n".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let again: AuthorizeRequest = serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
    assert_eq!(again, request);
}
