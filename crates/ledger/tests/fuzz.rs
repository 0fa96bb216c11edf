//! The parsers that take untrusted bytes: log entries (postcard), state and
//! history records, decimal amounts. Arbitrary and mutated inputs must come
//! back as errors (or values), never as a panic; and the decimal codec must
//! agree with the atomic form on every value.

use std::collections::BTreeMap;

use ledger::amount::{parse_decimal, parse_positive, ASSET_DECIMALS_MAX};
use ledger::*;
use proptest::prelude::*;

fn sample_entry() -> Entry {
    let sid = SessionId::new("s1").unwrap();
    Entry {
        time_ms: 1_000_000,
        commands: vec![
            Command::CreateBudget(CreateBudget {
                id: BudgetId::new("org").unwrap(),
                asset: Asset::usdc(),
                cap: Amount(100_000_000),
                tool_caps: [(Tool::new("gpu").unwrap(), Amount(5_000_000))].into(),
                parent: None,
                blocked_tools: [Tool::new("casino").unwrap()].into(),
            }),
            Command::CreateSession(CreateSession {
                id: sid.clone(),
                token_hash: [7; 32],
                asset: Asset::usdc(),
                cap: Amount(25_000_000),
                ttl_ms: 3_600_000,
                agent_id: "agent".into(),
                wallet_address: Some("0xabc".into()),
                tool_caps: BTreeMap::new(),
                budget: Some(BudgetId::new("org").unwrap()),
                tools: Some([Tool::new("search").unwrap()].into()),
                live_holds_max: Some(10),
            }),
            Command::Authorize(Authorize {
                session_id: sid.clone(),
                amount: AmountInput::Decimal("2.5".into()),
                tool: Tool::new("search").unwrap(),
                idempotency_key: Some(IdempotencyKey::new("k").unwrap()),
                hold_ttl_ms: Some(60_000),
                context: DecisionContext::default(),
                credential: None,
            }),
            Command::MarkSettling(MarkSettling {
                hold_id: HoldId(0),
                caller: Caller::Gateway,
                reference: "nonce".into(),
            }),
            Command::Capture(Capture {
                hold_id: HoldId(0),
                caller: Caller::Admin,
                amount: Some(AmountInput::Atomic(Amount(1_000_000))),
                receipt: ReceiptInput::default(),
                idempotency_key: None,
                credential: None,
            }),
        ],
    }
}

type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// A ledger with some of everything, its records, and its history.
fn sample_state() -> (Ledger, Records, Vec<Vec<u8>>) {
    let mut ledger = Ledger::new();
    ledger.apply(1, &sample_entry());
    let history = ledger.take_changes().history.iter().map(|h| h.encode()).collect();
    let records = ledger.records().collect();
    (ledger, records, history)
}

fn mutate(bytes: &mut Vec<u8>, edits: &[(usize, u8, u8)]) {
    for (at, value, how) in edits {
        if bytes.is_empty() {
            bytes.push(*value);
            continue;
        }
        let at = at % bytes.len();
        match how % 4 {
            0 => bytes[at] = *value,
            1 => bytes[at] ^= 1 << (value % 8),
            2 => bytes.insert(at, *value),
            _ => {
                bytes.remove(at);
            }
        }
    }
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
}

/// Whatever decodes is then applied: a replica must survive any entry the
/// log could hand it.
fn apply_decoded(bytes: &[u8]) {
    if let Ok(entry) = postcard::from_bytes::<Entry>(bytes) {
        let (mut ledger, _, _) = sample_state();
        let out = ledger.apply(2, &entry);
        assert_eq!(out.len(), entry.commands.len());
        ledger.check_invariants().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_entry_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        apply_decoded(&bytes);
    }

    #[test]
    fn mutated_entries_decode_to_errors_or_apply_safely(edits in edits()) {
        let mut bytes = postcard::to_allocvec(&sample_entry()).unwrap();
        mutate(&mut bytes, &edits);
        apply_decoded(&bytes);
    }

    #[test]
    fn mutated_records_load_or_fail_cleanly(pick in any::<usize>(), edits in edits()) {
        let (ledger, mut records, history) = sample_state();
        let n = records.len();
        let (key, value) = &mut records[pick % n];
        if pick % 3 == 0 { mutate(key, &edits) } else { mutate(value, &edits) }
        // Loading either fails with an error or yields a state that passes
        // its invariants (the check runs inside `from_records`).
        if let Ok(loaded) = Ledger::from_records(records.clone()) {
            loaded.check_invariants().unwrap();
            if records == ledger.records().collect::<Vec<_>>() {
                prop_assert_eq!(loaded.digest(), ledger.digest());
            }
        }
        for h in history {
            let mut h = h.clone();
            mutate(&mut h, &edits);
            let _ = HistoryRecord::decode(&h);
            let _ = records::decode_hold(&h);
            let _ = records::decode_receipt(&h);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_amount_parser(text in "\\PC{0,80}", decimals in any::<u8>()) {
        let _ = parse_decimal(&text, decimals);
        let _ = AmountInput::Decimal(text.clone()).check_syntax();
        let _ = AmountInput::Decimal(text).resolve(decimals);
    }

    #[test]
    fn digit_strings_never_panic_the_amount_parser(text in "[0-9.]{0,70}", decimals in 0u8..=40) {
        if let Ok(a) = parse_decimal(&text, decimals) {
            // What parses formats back to the same value.
            prop_assert_eq!(parse_decimal(&a.to_decimal_string(decimals), decimals), Ok(a));
        }
    }

    /// Finding 7: the decimal form of any value is accepted exactly when
    /// the atomic form is, and means the same amount.
    #[test]
    fn decimal_and_atomic_forms_agree(units in prop_oneof![any::<u128>(), 1u128..1_000_000_000_000_000_000u128], decimals in 0u8..=ASSET_DECIMALS_MAX) {
        let text = Amount(units).to_decimal_string(decimals);
        prop_assert_eq!(parse_decimal(&text, decimals), Ok(Amount(units)));
        let decimal = AmountInput::Decimal(text);
        let atomic = AmountInput::Atomic(Amount(units));
        prop_assert_eq!(decimal.check_syntax().is_ok(), atomic.check_syntax().is_ok());
        prop_assert_eq!(decimal.resolve(decimals), atomic.resolve(decimals));
        prop_assert_eq!(parse_positive(&Amount(units).to_decimal_string(decimals), decimals).is_ok(), units > 0);
    }
}
