//! Issue 11 through the ledger's command API: commands an adversarial agent
//! or a careless operator can send, and what they must (not) do.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use ledger::*;

const DAY_MS: u64 = 86_400_000;

impl World {
    fn budget(&mut self, id: &str, cap: &str, parent: Option<&str>, blocked: &[&str]) {
        self.create_budget(id, cap, parent, &[], blocked);
    }

    fn create_session(
        &mut self,
        id: &str,
        token: u8,
        budget: Option<&str>,
        allow: Option<&[&str]>,
        max: Option<u32>,
    ) -> Outcome {
        self.run(Command::CreateSession(CreateSession {
            id: sid(id),
            token_hash: [token; 32],
            asset: Asset::usdc(),
            cap: usd("5000000000"),
            ttl_ms: 30 * DAY_MS,
            agent_id: "agent".into(),
            wallet_address: None,
            tool_caps: BTreeMap::new(),
            budget: budget.map(bid),
            tools: allow.map(tools),
            live_holds_max: max,
        }))
    }

    fn authorize(&mut self, session: &str, amount: &str, t: &str, ttl_ms: u64) -> Outcome {
        self.run(Command::Authorize(Authorize {
            session_id: sid(session),
            amount: AmountInput::Decimal(amount.into()),
            tool: tool(t),
            idempotency_key: None,
            hold_ttl_ms: Some(ttl_ms),
            context: DecisionContext::default(),
            credential: None,
        }))
    }

    fn set_tool_caps(&mut self, budget: &str, caps: &[(&str, &str)]) -> Outcome {
        self.run(Command::UpdateBudget(UpdateBudget {
            id: bid(budget),
            cap: None,
            tool_caps: Some(tool_caps(caps)),
            blocked_tools: None,
        }))
    }
}

fn gpu_cap(w: &World, budget: &str) -> CapUsage {
    w.ledger.budget(&bid(budget)).unwrap().tool_caps[&tool("gpu")].clone()
}

/// The finding 1: a tool cap added while holds for the tool were
/// live started at zero held, so releasing one of those holds underflowed
/// inside apply (a panic on every replica). On the base commit the void
/// below panics in `Usage::settle`.
#[test]
fn a_tool_cap_added_while_holds_are_live_counts_them_then_void_and_capture() {
    let mut w = World::dropping_changes();
    w.budget("org", "1000", None, &[]);
    w.budget("team", "1000", Some("org"), &[]);
    w.create_session("s", 1, Some("team"), None, None);
    let h1 = approved(&w.authorize("s", "10", "gpu", 60_000));
    let h2 = approved(&w.authorize("s", "5", "gpu", 60_000));
    approved(&w.authorize("s", "7", "search", 60_000));

    // Below the live holds it would cover: refused, nothing changes.
    assert_eq!(
        w.set_tool_caps("org", &[("gpu", "14")]),
        Outcome::Refused(Refusal::CapBelowUsage { committed: usd("15") })
    );
    assert!(w.ledger.budget(&bid("org")).unwrap().tool_caps.is_empty());
    assert_eq!(w.set_tool_caps("org", &[("gpu", "20")]), Outcome::BudgetUpdated);
    let cap = gpu_cap(&w, "org");
    assert_eq!((cap.usage.held, cap.usage.spent), (usd("15"), Amount::ZERO));
    // Only 5 more fits under the new cap.
    assert!(matches!(
        w.authorize("s", "6", "gpu", 60_000),
        Outcome::Denied(DenyReason::ToolCap { .. })
    ));

    let void = w.run(Command::Void(Void {
        hold_id: h1,
        caller: Caller::Admin,
        idempotency_key: None,
        credential: None,
    }));
    assert!(matches!(void, Outcome::Voided { .. }), "{void:?}");
    let capture = w.run(Command::Capture(Capture {
        hold_id: h2,
        caller: Caller::Gateway,
        amount: Some(AmountInput::Decimal("4".into())),
        receipt: ReceiptInput::default(),
        idempotency_key: None,
        credential: None,
    }));
    assert!(matches!(capture, Outcome::Captured { .. }), "{capture:?}");
    let cap = gpu_cap(&w, "org");
    assert_eq!((cap.usage.held, cap.usage.spent), (Amount::ZERO, usd("4")));
    // Removing the tool cap is always fine.
    assert_eq!(w.set_tool_caps("org", &[]), Outcome::BudgetUpdated);
}

/// Same, with the holds ending by expiry (no command at all): on the base
/// commit the time advance panics.
#[test]
fn a_tool_cap_added_while_holds_are_live_then_they_expire() {
    let mut w = World::dropping_changes();
    w.budget("org", "1000", None, &[]);
    w.create_session("s", 1, Some("org"), None, None);
    w.create_session("other", 2, None, None, None);
    approved(&w.authorize("s", "10", "gpu", 60_000));
    // A hold by a session outside the budget is not covered.
    approved(&w.authorize("other", "10", "gpu", 60_000));
    assert_eq!(w.set_tool_caps("org", &[("gpu", "10")]), Outcome::BudgetUpdated);
    assert_eq!(gpu_cap(&w, "org").usage.held, usd("10"));
    w.now += 120_000;
    w.apply(vec![]);
    assert_eq!(w.ledger.counts().2, 0);
    assert_eq!(gpu_cap(&w, "org").usage, Usage::default());
}

#[test]
fn a_session_tool_allowlist_denies_other_tools() {
    let mut w = World::dropping_changes();
    w.create_session("s", 1, None, Some(&["search"]), None);
    approved(&w.authorize("s", "1", "search", 60_000));
    assert_eq!(
        w.authorize("s", "1", "gpu", 60_000),
        Outcome::Denied(DenyReason::ToolNotAllowed)
    );
    assert_eq!(DenyReason::ToolNotAllowed.code(), "tool_not_allowed");
    // An empty allowlist allows nothing.
    w.create_session("none", 2, None, Some(&[]), None);
    assert_eq!(
        w.authorize("none", "1", "search", 60_000),
        Outcome::Denied(DenyReason::ToolNotAllowed)
    );
}

#[test]
fn a_tool_blocked_on_an_ancestor_budget_is_denied_until_unblocked() {
    let mut w = World::dropping_changes();
    w.budget("org", "1000", None, &["casino"]);
    w.budget("team", "1000", Some("org"), &[]);
    w.create_session("s", 1, Some("team"), None, None);
    let denied = w.authorize("s", "1", "casino", 60_000);
    assert_eq!(
        denied,
        Outcome::Denied(DenyReason::ToolBlocked { budget_id: bid("org") })
    );
    assert_eq!(DenyReason::ToolBlocked { budget_id: bid("org") }.code(), "tool_blocked");
    approved(&w.authorize("s", "1", "search", 60_000));
    let block_search = w.run(Command::UpdateBudget(UpdateBudget {
        id: bid("team"),
        cap: None,
        tool_caps: None,
        blocked_tools: Some(tools(&["search"])),
    }));
    assert_eq!(block_search, Outcome::BudgetUpdated);
    assert_eq!(
        w.authorize("s", "1", "search", 60_000),
        Outcome::Denied(DenyReason::ToolBlocked { budget_id: bid("team") })
    );
    let unblock = w.run(Command::UpdateBudget(UpdateBudget {
        id: bid("org"),
        cap: None,
        tool_caps: None,
        blocked_tools: Some(BTreeSet::new()),
    }));
    assert_eq!(unblock, Outcome::BudgetUpdated);
    approved(&w.authorize("s", "1", "casino", 60_000));
}

#[test]
fn a_flood_of_one_unit_holds_stops_at_the_session_limit() {
    let mut w = World::dropping_changes();
    w.create_session("s", 1, None, None, Some(3));
    let holds: Vec<HoldId> = (0..3)
        .map(|_| approved(&w.authorize("s", "0.000001", "t", 60_000)))
        .collect();
    assert_eq!(
        w.authorize("s", "0.000001", "t", 60_000),
        Outcome::Denied(DenyReason::TooManyHolds { limit: 3 })
    );
    assert_eq!(DenyReason::TooManyHolds { limit: 3 }.code(), "live_holds_max");
    w.run(Command::Void(Void {
        hold_id: holds[0],
        caller: Caller::Admin,
        idempotency_key: None,
        credential: None,
    }));
    approved(&w.authorize("s", "0.000001", "t", 60_000));
    // The count survives a reload from the records.
    let reloaded = Ledger::from_records(w.ledger.records()).unwrap();
    assert_eq!(reloaded.digest(), w.ledger.digest());
    // The default applies when no limit is given.
    w.create_session("d", 2, None, None, None);
    assert_eq!(
        w.ledger.session(&sid("d")).unwrap().live_holds_max,
        SESSION_LIVE_HOLDS_DEFAULT
    );
    for bad in [0, SESSION_LIVE_HOLDS_MAX + 1] {
        assert!(matches!(
            w.create_session("bad", 3, None, None, Some(bad)),
            Outcome::Refused(Refusal::Invalid(_))
        ));
    }
}

/// Issue finding 6b: a retried create with the same token is a replay; a
/// different token is refused (on the base commit it answered "existed"
/// while the new token was never stored).
#[test]
fn session_create_replays_only_with_the_same_token() {
    let mut w = World::dropping_changes();
    assert!(matches!(
        w.create_session("s", 1, None, None, None),
        Outcome::SessionCreated { existed: false, .. }
    ));
    assert!(matches!(
        w.create_session("s", 1, None, None, None),
        Outcome::SessionCreated { existed: true, .. }
    ));
    assert_eq!(
        w.create_session("s", 9, None, None, None),
        Outcome::Refused(Refusal::AlreadyExists)
    );
    assert!(w.ledger.session_by_token(&[9; 32]).is_none());
    assert!(w.ledger.session_by_token(&[1; 32]).is_some());
    // Same token, different parameters: refused too.
    assert_eq!(
        w.create_session("s", 1, None, Some(&["x"]), None),
        Outcome::Refused(Refusal::AlreadyExists)
    );
}

#[test]
fn an_entry_above_the_size_limit_is_refused_whole() {
    let mut w = World::dropping_changes();
    w.create_session("s", 1, None, None, Some(ENTRY_COMMANDS_MAX as u32));
    let before: Vec<_> = w.ledger.records().filter(|(k, _)| k[0] != b'M').collect();
    let now_before = w.ledger.now_ms();
    let authorize = Command::Authorize(Authorize {
        session_id: sid("s"),
        amount: AmountInput::Atomic(Amount(1)),
        tool: tool("t"),
        idempotency_key: None,
        hold_ttl_ms: None,
        context: DecisionContext::default(),
        credential: None,
    });
    w.now += 1000;
    let out = w.apply(vec![authorize.clone(); ENTRY_COMMANDS_MAX + 1]);
    assert_eq!(out.len(), ENTRY_COMMANDS_MAX + 1);
    assert!(out
        .iter()
        .all(|o| matches!(o, Outcome::Refused(Refusal::Invalid(e)) if e.field == "commands")));
    let after: Vec<_> = w.ledger.records().filter(|(k, _)| k[0] != b'M').collect();
    assert_eq!(before, after);
    assert_eq!(w.ledger.now_ms(), now_before);
    // At the limit, all of them apply.
    let out = w.apply(vec![authorize; ENTRY_COMMANDS_MAX]);
    assert!(out.iter().all(|o| matches!(o, Outcome::Approved { .. })));
    assert_eq!(w.ledger.counts().2, ENTRY_COMMANDS_MAX);
}

/// Finding 7: on the base commit the decimal form was checked at 30 places
/// before the session's decimals were known, so anything above ~340 million
/// overflowed while `Atomic` of the same value was accepted.
#[test]
fn large_decimal_amounts_are_accepted_like_atomic_ones() {
    let mut w = World::dropping_changes();
    w.create_session("s", 1, None, None, None);
    let out = w.authorize("s", "1000000000.5", "t", 60_000);
    match out {
        Outcome::Approved { approval, .. } => assert_eq!(approval.amount, Amount(1_000_000_000_500_000)),
        other => panic!("{other:?}"),
    }
    let huge = AmountInput::Decimal(Amount(u128::MAX).to_decimal_string(0));
    assert_eq!(huge.check_syntax(), Ok(()));
    assert_eq!(huge.resolve(0), Ok(Amount(u128::MAX)));
    assert_eq!(huge.resolve(1), Err(AmountError::Overflow));
    let too_precise = AmountInput::Decimal(format!("0.{}1", "0".repeat(30)));
    assert!(too_precise.check_syntax().is_err());
}

/// Found by the fault suite's churn workload: after a token rotation was
/// acknowledged, a node that had not applied it yet still mapped the old
/// token to the session and proposed on its behalf. The ledger now checks the
/// credential a command came with against the session's current token at
/// apply, so a superseded token can never act, whichever node it reached.
#[test]
fn a_superseded_session_token_can_neither_authorize_nor_resolve() {
    let mut w = World::dropping_changes();
    w.create_session("s", 1, None, None, None);
    let authorize = |credential: [u8; 32]| {
        Command::Authorize(Authorize {
            session_id: sid("s"),
            amount: AmountInput::Decimal("1".into()),
            tool: tool("search"),
            idempotency_key: None,
            hold_ttl_ms: None,
            context: DecisionContext::default(),
            credential: Some(credential),
        })
    };
    let h = approved(&w.run(authorize([1; 32])));
    assert_eq!(
        w.run(Command::RotateSessionToken {
            session_id: sid("s"),
            token_hash: [2; 32],
        }),
        Outcome::TokenRotated
    );
    assert_eq!(w.run(authorize([1; 32])), Outcome::Refused(Refusal::TokenSuperseded));
    let void = |credential: [u8; 32]| {
        Command::Void(Void {
            hold_id: h,
            caller: Caller::Session(sid("s")),
            idempotency_key: None,
            credential: Some(credential),
        })
    };
    assert_eq!(w.run(void([1; 32])), Outcome::Refused(Refusal::TokenSuperseded));
    let capture = Command::Capture(Capture {
        hold_id: h,
        caller: Caller::Session(sid("s")),
        amount: None,
        receipt: ReceiptInput::default(),
        idempotency_key: None,
        credential: Some([1; 32]),
    });
    assert_eq!(w.run(capture), Outcome::Refused(Refusal::TokenSuperseded));
    // Refusals change nothing but the entry counter.
    assert_eq!(w.ledger.live_holds_of(&sid("s")), 1);
    // The current token works.
    assert!(matches!(w.run(void([2; 32])), Outcome::Voided { .. }));
    assert!(matches!(w.run(authorize([2; 32])), Outcome::Approved { .. }));
}
