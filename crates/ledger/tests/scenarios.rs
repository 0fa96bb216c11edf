//! The ledger through its command API: one scenario per behaviour.

mod common;

use std::collections::BTreeMap;

use common::*;
use ledger::*;

const SESSION_TTL_MS: u64 = 30 * 86_400_000;

impl World {
    fn budget(&mut self, id: &str, cap: &str, parent: Option<&str>, caps: &[(&str, &str)]) {
        self.create_budget(id, cap, parent, caps, &[]);
    }

    fn session(&mut self, id: &str, cap: &str, budget: Option<&str>, tool_caps: &[(&str, &str)]) {
        self.tokens += 1;
        let out = self.run(Command::CreateSession(CreateSession {
            id: sid(id),
            token_hash: [self.tokens; 32],
            asset: Asset::usdc(),
            cap: usd(cap),
            ttl_ms: SESSION_TTL_MS,
            agent_id: "agent-7".into(),
            wallet_address: Some("0xabc".into()),
            tool_caps: common::tool_caps(tool_caps),
            budget: budget.map(bid),
            tools: None,
            live_holds_max: None,
        }));
        assert!(matches!(out, Outcome::SessionCreated { existed: false, .. }), "{out:?}");
    }

    fn authorize(&mut self, session: &str, amount: &str, t: &str, k: Option<&str>) -> Outcome {
        self.run(Command::Authorize(Authorize {
            session_id: sid(session),
            amount: AmountInput::Decimal(amount.into()),
            tool: tool(t),
            idempotency_key: k.and_then(key),
            hold_ttl_ms: Some(60_000),
            context: DecisionContext {
                trace_id: Some("trace-1".into()),
                tool_call_id: Some("call-1".into()),
                note: None,
            },
            credential: None,
        }))
    }

    fn capture(&mut self, hold: HoldId, amount: Option<&str>, k: Option<&str>) -> Outcome {
        self.run(Command::Capture(Capture {
            hold_id: hold,
            caller: Caller::Admin,
            amount: amount.map(|a| AmountInput::Decimal(a.into())),
            receipt: ReceiptInput {
                payment_request_id: Some("req-1".into()),
                signature: Some("0xsig".into()),
                transaction_hash: None,
                wallet_address: None,
                network: Some("base-sepolia".into()),
                resource_url: Some("https://api.example/paid".into()),
            },
            idempotency_key: k.and_then(key),
            credential: None,
        }))
    }

    fn void(&mut self, hold: HoldId, caller: Caller) -> Outcome {
        self.run(Command::Void(Void {
            hold_id: hold,
            caller,
            idempotency_key: None,
            credential: None,
        }))
    }

    fn remaining(&self, session: &str) -> Amount {
        self.ledger.session(&sid(session)).unwrap().limit.remaining()
    }
}

#[test]
fn seed_example_three_tens_against_twenty_five() {
    let mut w = World::new();
    w.session("s1", "25.00", None, &[]);
    // One entry carrying all three, as the leader's batcher would propose.
    let commands = (0..3)
        .map(|i| {
            Command::Authorize(Authorize {
                session_id: sid("s1"),
                amount: AmountInput::Decimal("10.00".into()),
                tool: tool("search"),
                idempotency_key: key(&format!("k{i}")),
                hold_ttl_ms: None,
                context: DecisionContext::default(),
                credential: None,
            })
        })
        .collect();
    let out = w.ledger.apply(
        99,
        &Entry {
            time_ms: w.now,
            commands,
        },
    );
    let approvals = out.iter().filter(|o| matches!(o, Outcome::Approved { .. })).count();
    assert_eq!(approvals, 2);
    assert_eq!(
        out[2],
        Outcome::Denied(DenyReason::SessionCap {
            remaining: usd("5"),
            asset: Asset::usdc(),
        })
    );
    assert_eq!(w.remaining("s1"), usd("5"));
}

#[test]
fn denial_moves_no_money_but_binds_its_key() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    approved(&w.authorize("s1", "20", "t", Some("a")));
    w.ledger.take_changes();
    let money = |w: &World| -> Vec<_> {
        w.ledger
            .records()
            .filter(|(k, _)| k[0] != b'M' && k[0] != b'I')
            .collect()
    };
    let before = money(&w);
    let out = w.authorize("s1", "10", "t", Some("b"));
    assert_eq!(
        out,
        Outcome::Denied(DenyReason::SessionCap {
            remaining: usd("5"),
            asset: Asset::usdc(),
        })
    );
    assert_eq!(
        before,
        money(&w),
        "a denial must leave no hold, budget or session change"
    );
    let changes = w.ledger.take_changes();
    assert!(changes.history.is_empty());
    let dirty: Vec<_> = changes.dirty.into_iter().collect();
    assert_eq!(dirty.len(), 2, "only the clock and the key: {dirty:?}");
    assert!(dirty.contains(&RecordKey::Meta));
    assert!(dirty.iter().any(|k| matches!(k, RecordKey::Idempotency(_))));
    // Money freed later does not turn the key into an approval: a retry, or
    // a late copy of the first attempt, gets the first answer again.
    w.void(HoldId(0), Caller::Admin);
    assert_eq!(
        w.authorize("s1", "10", "t", Some("b")),
        Outcome::Denied(DenyReason::SessionCap {
            remaining: usd("5"),
            asset: Asset::usdc(),
        })
    );
    assert_eq!(w.remaining("s1"), usd("25"));
    // The same key with other parameters is a conflict; a new key is decided.
    assert_eq!(
        w.authorize("s1", "11", "t", Some("b")),
        Outcome::Refused(Refusal::IdempotencyConflict)
    );
    approved(&w.authorize("s1", "10", "t", Some("c")));
}

#[test]
fn capture_partial_releases_the_rest_and_writes_a_receipt() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    let h = approved(&w.authorize("s1", "10", "t", None));
    assert_eq!(w.remaining("s1"), usd("15"));
    w.ledger.take_changes();
    let out = w.capture(h, Some("7.5"), None);
    let Outcome::Captured {
        captured,
        replayed: false,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!((captured.captured, captured.released), (usd("7.5"), usd("2.5")));
    assert_eq!(w.remaining("s1"), usd("17.5"));
    let s = w.ledger.session(&sid("s1")).unwrap();
    assert_eq!((s.limit.usage.spent, s.limit.usage.held), (usd("7.5"), Amount::ZERO));
    let changes = w.ledger.take_changes();
    let receipt = changes
        .history
        .iter()
        .find_map(|r| match r {
            HistoryRecord::Receipt(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(receipt.amount, usd("7.5"));
    assert_eq!(receipt.wallet_address.as_deref(), Some("0xabc"));
    assert_eq!(receipt.agent_id, "agent-7");
    assert_eq!(receipt.context.trace_id.as_deref(), Some("trace-1"));
    assert_eq!(receipt.signature.as_deref(), Some("0xsig"));
    assert!(w.ledger.live_hold(h).is_none());
}

#[test]
fn resolving_twice_has_one_effect() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    let h = approved(&w.authorize("s1", "10", "t", None));
    assert!(matches!(
        w.capture(h, None, Some("c1")),
        Outcome::Captured { replayed: false, .. }
    ));
    let spent = w.ledger.session(&sid("s1")).unwrap().limit.usage.spent;
    // Same key: the first result again.
    assert!(matches!(
        w.capture(h, None, Some("c1")),
        Outcome::Captured { replayed: true, .. }
    ));
    // Same key, different amount: a conflict.
    assert_eq!(
        w.capture(h, Some("1"), Some("c1")),
        Outcome::Refused(Refusal::IdempotencyConflict)
    );
    // No key: the hold is no longer live.
    assert!(matches!(
        w.capture(h, None, None),
        Outcome::Refused(Refusal::AuthorizationNotActive { .. })
    ));
    assert!(matches!(
        w.void(h, Caller::Admin),
        Outcome::Refused(Refusal::AuthorizationNotActive { .. })
    ));
    assert_eq!(w.ledger.session(&sid("s1")).unwrap().limit.usage.spent, spent);
    assert_eq!(
        w.capture(HoldId(99), None, None),
        Outcome::Refused(Refusal::UnknownAuthorization)
    );
}

#[test]
fn capture_above_the_hold_is_refused() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    let h = approved(&w.authorize("s1", "10", "t", None));
    assert_eq!(
        w.capture(h, Some("10.01"), None),
        Outcome::Refused(Refusal::AmountExceedsHold { held: usd("10") })
    );
    assert_eq!(
        w.capture(h, Some("1.0000001"), None),
        Outcome::Refused(Refusal::InvalidAmount {
            message: "amount has 7 decimal places but the asset has 6".into()
        })
    );
    assert!(w.ledger.live_hold(h).is_some());
}

#[test]
fn holds_expire_by_log_time_only() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    let h = approved(&w.authorize("s1", "10", "t", None)); // ttl 60 s
    w.now += 59_999;
    w.run(Command::RevokeSession {
        session_id: sid("nope"),
    });
    assert!(w.ledger.live_hold(h).is_some());
    // An entry stamped earlier than the state's time does not move time back.
    w.now -= 30_000;
    w.run(Command::RevokeSession {
        session_id: sid("nope"),
    });
    assert_eq!(w.ledger.now_ms(), 1_000_000 + 59_999);
    w.now += 30_001;
    w.ledger.take_changes();
    w.run(Command::RevokeSession {
        session_id: sid("nope"),
    });
    assert!(w.ledger.live_hold(h).is_none());
    assert_eq!(w.remaining("s1"), usd("25"));
    let expired = w
        .ledger
        .take_changes()
        .history
        .into_iter()
        .any(|r| matches!(r, HistoryRecord::Hold(hold) if hold.id == h && hold.status == HoldStatus::Expired));
    assert!(expired);
    assert!(matches!(
        w.capture(h, None, None),
        Outcome::Refused(Refusal::AuthorizationNotActive { .. })
    ));
}

#[test]
fn budget_tree_caps_every_level() {
    let mut w = World::new();
    w.budget("org:acme", "100", None, &[]);
    w.budget("team:research", "30", Some("org:acme"), &[("gpu", "5")]);
    w.session("s1", "25", Some("team:research"), &[]);
    w.session("s2", "25", Some("team:research"), &[]);
    approved(&w.authorize("s1", "20", "t", None));
    assert_eq!(
        w.authorize("s2", "20", "t", None),
        Outcome::Denied(DenyReason::BudgetCap {
            budget_id: bid("team:research"),
            remaining: usd("10"),
            asset: Asset::usdc(),
        })
    );
    assert_eq!(
        w.authorize("s2", "6", "gpu", None),
        Outcome::Denied(DenyReason::ToolCap {
            tool: tool("gpu"),
            budget_id: Some(bid("team:research")),
            remaining: usd("5"),
            asset: Asset::usdc(),
        })
    );
    approved(&w.authorize("s2", "5", "gpu", None));
    let org = w.ledger.budget(&bid("org:acme")).unwrap();
    assert_eq!(org.limit.usage.held, usd("25"));
    // The root caps too.
    w.budget("team:ops", "1000", Some("org:acme"), &[]);
    w.session("s3", "1000", Some("team:ops"), &[]);
    assert_eq!(
        w.authorize("s3", "76", "t", None),
        Outcome::Denied(DenyReason::BudgetCap {
            budget_id: bid("org:acme"),
            remaining: usd("75"),
            asset: Asset::usdc(),
        })
    );
}

#[test]
fn session_tool_cap() {
    let mut w = World::new();
    w.session("s1", "25", None, &[("search", "3")]);
    approved(&w.authorize("s1", "2", "search", None));
    assert_eq!(
        w.authorize("s1", "2", "search", None),
        Outcome::Denied(DenyReason::ToolCap {
            tool: tool("search"),
            budget_id: None,
            remaining: usd("1"),
            asset: Asset::usdc(),
        })
    );
    approved(&w.authorize("s1", "20", "other", None));
}

#[test]
fn revoked_and_expired_sessions_are_denied_but_retries_replay() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    let first = w.authorize("s1", "1", "t", Some("k"));
    approved(&first);
    w.run(Command::RevokeSession { session_id: sid("s1") });
    assert_eq!(
        w.authorize("s1", "1", "t", None),
        Outcome::Denied(DenyReason::SessionRevoked)
    );
    // A retry of an approved call still gets its first answer.
    assert!(matches!(
        w.authorize("s1", "1", "t", Some("k")),
        Outcome::Approved { replayed: true, .. }
    ));
    w.session("s2", "25", None, &[]);
    w.now += SESSION_TTL_MS;
    assert_eq!(
        w.authorize("s2", "1", "t", None),
        Outcome::Denied(DenyReason::SessionExpired)
    );
    assert_eq!(
        w.authorize("nope", "1", "t", None),
        Outcome::Denied(DenyReason::UnknownSession)
    );
}

#[test]
fn idempotency_keys_return_the_first_result_then_age_out() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    let first = approved(&w.authorize("s1", "10", "t", Some("k")));
    let again = w.authorize("s1", "10", "t", Some("k"));
    assert_eq!(approved(&again), first);
    assert_eq!(w.remaining("s1"), usd("15"), "a replay holds nothing more");
    assert_eq!(
        w.authorize("s1", "11", "t", Some("k")),
        Outcome::Refused(Refusal::IdempotencyConflict)
    );
    // Keys are per session.
    w.session("s2", "25", None, &[]);
    approved(&w.authorize("s2", "11", "t", Some("k")));
    // After the window the key is forgotten.
    w.now += IDEMPOTENCY_WINDOW_MS;
    w.run(Command::RevokeSession {
        session_id: sid("nope"),
    });
    assert_eq!(w.ledger.counts().3, 0);
    assert!(matches!(
        w.authorize("s1", "11", "t", Some("k")),
        Outcome::Approved { replayed: false, .. }
    ));
}

#[test]
fn sessions_may_only_touch_their_own_holds() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    w.session("s2", "25", None, &[]);
    let h = approved(&w.authorize("s1", "10", "t", None));
    assert_eq!(
        w.void(h, Caller::Session(sid("s2"))),
        Outcome::Refused(Refusal::Forbidden)
    );
    assert!(matches!(w.void(h, Caller::Session(sid("s1"))), Outcome::Voided { .. }));
    assert_eq!(w.remaining("s1"), usd("25"));
}

#[test]
fn budgets_validate_parents_assets_and_duplicates() {
    let mut w = World::new();
    w.budget("org", "100", None, &[]);
    let again = w.run(Command::CreateBudget(CreateBudget {
        id: bid("org"),
        asset: Asset::usdc(),
        cap: usd("100"),
        tool_caps: BTreeMap::new(),
        parent: None,
        blocked_tools: Default::default(),
    }));
    assert_eq!(again, Outcome::BudgetCreated { existed: true });
    let different = w.run(Command::CreateBudget(CreateBudget {
        id: bid("org"),
        asset: Asset::usdc(),
        cap: usd("5"),
        tool_caps: BTreeMap::new(),
        parent: None,
        blocked_tools: Default::default(),
    }));
    assert_eq!(different, Outcome::Refused(Refusal::AlreadyExists));
    let orphan = w.run(Command::CreateBudget(CreateBudget {
        id: bid("team"),
        asset: Asset::usdc(),
        cap: usd("5"),
        tool_caps: BTreeMap::new(),
        parent: Some(bid("ghost")),
        blocked_tools: Default::default(),
    }));
    assert_eq!(
        orphan,
        Outcome::Refused(Refusal::UnknownBudget {
            budget_id: bid("ghost")
        })
    );
    let eth = w.run(Command::CreateBudget(CreateBudget {
        id: bid("team"),
        asset: Asset {
            code: AssetCode::new("ETH").unwrap(),
            decimals: 18,
        },
        cap: Amount(1),
        tool_caps: BTreeMap::new(),
        parent: Some(bid("org")),
        blocked_tools: Default::default(),
    }));
    assert!(matches!(eth, Outcome::Refused(Refusal::AssetMismatch { .. })));
    // Lowering a cap below what is committed is refused.
    w.session("s", "50", Some("org"), &[]);
    approved(&w.authorize("s", "40", "t", None));
    let lower = w.run(Command::UpdateBudget(UpdateBudget {
        id: bid("org"),
        cap: Some(usd("39")),
        tool_caps: None,
        blocked_tools: None,
    }));
    assert_eq!(lower, Outcome::Refused(Refusal::CapBelowUsage { committed: usd("40") }));
    let raise = w.run(Command::UpdateBudget(UpdateBudget {
        id: bid("org"),
        cap: Some(usd("200")),
        tool_caps: None,
        blocked_tools: None,
    }));
    assert_eq!(raise, Outcome::BudgetUpdated);
}

#[test]
fn bad_commands_are_refused_without_effect() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    let digest = w.ledger.records().filter(|(k, _)| k[0] != b'M').collect::<Vec<_>>();
    for amount in ["0", "-1", "1e3", "", "abc"] {
        let out = w.run(Command::Authorize(Authorize {
            session_id: sid("s1"),
            amount: AmountInput::Decimal(amount.into()),
            tool: tool("t"),
            idempotency_key: None,
            hold_ttl_ms: None,
            context: DecisionContext::default(),
            credential: None,
        }));
        assert!(
            matches!(out, Outcome::Refused(Refusal::Invalid(_))),
            "{amount}: {out:?}"
        );
    }
    let out = w.run(Command::Authorize(Authorize {
        session_id: sid("s1"),
        amount: AmountInput::Decimal("1".into()),
        tool: tool("t"),
        idempotency_key: None,
        hold_ttl_ms: Some(HOLD_TTL_MAX_MS + 1),
        context: DecisionContext::default(),
        credential: None,
    }));
    assert!(matches!(out, Outcome::Refused(Refusal::Invalid(_))));
    assert_eq!(
        digest,
        w.ledger.records().filter(|(k, _)| k[0] != b'M').collect::<Vec<_>>()
    );
}

#[test]
fn token_rotation_moves_the_index() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    assert!(w.ledger.session_by_token(&[1; 32]).is_some());
    let out = w.run(Command::RotateSessionToken {
        session_id: sid("s1"),
        token_hash: [9; 32],
    });
    assert_eq!(out, Outcome::TokenRotated);
    assert!(w.ledger.session_by_token(&[1; 32]).is_none());
    assert_eq!(w.ledger.session_by_token(&[9; 32]).unwrap().id, sid("s1"));
}

#[test]
fn corrupt_records_are_refused_on_load() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    approved(&w.authorize("s1", "10", "t", None));
    let records: Vec<_> = w.ledger.records().collect();
    assert_eq!(
        Ledger::from_records(records.clone()).unwrap().digest(),
        w.ledger.digest()
    );
    // A flipped byte in the session record breaks decoding or the invariant.
    let mut bad = records.clone();
    let i = bad.iter().position(|(k, _)| k[0] == b'S').unwrap();
    let last = bad[i].1.len() - 1;
    bad[i].1[last] ^= 0xff;
    assert!(Ledger::from_records(bad).is_err());
    let mut wrong_version = records.clone();
    wrong_version[0].1[0] = 9;
    assert!(matches!(
        Ledger::from_records(wrong_version),
        Err(RecordError::Version { .. })
    ));
    let mut unknown = records;
    unknown.push((b"Zzz".to_vec(), vec![1]));
    assert!(matches!(
        Ledger::from_records(unknown),
        Err(RecordError::UnknownKey { .. })
    ));
}

#[test]
fn a_hold_with_a_payment_in_flight_does_not_expire() {
    let mut w = World::new();
    w.session("s1", "25", None, &[]);
    let h = approved(&w.authorize("s1", "10", "t", None)); // ttl 60 s
    let mark = |w: &mut World, caller: Caller, reference: &str| {
        w.run(Command::MarkSettling(MarkSettling {
            hold_id: h,
            caller,
            reference: reference.into(),
        }))
    };
    w.session("s2", "25", None, &[]);
    assert_eq!(
        mark(&mut w, Caller::Session(sid("s2")), "n1"),
        Outcome::Refused(Refusal::Forbidden)
    );
    // Pinning is the gateway's act, not the agent's: even its own session
    // may not pin.
    assert_eq!(
        mark(&mut w, Caller::Session(sid("s1")), "n1"),
        Outcome::Refused(Refusal::Forbidden)
    );
    assert_eq!(
        mark(&mut w, Caller::Gateway, "n1"),
        Outcome::SettlingMarked {
            hold_id: h,
            already: false
        }
    );
    // The agent can neither void nor capture a pinned hold: a signed payment
    // may be in flight, and releasing the hold would let that spend escape
    // the cap.
    assert_eq!(
        w.void(h, Caller::Session(sid("s1"))),
        Outcome::Refused(Refusal::HoldSettling)
    );
    assert_eq!(
        w.run(Command::Capture(Capture {
            hold_id: h,
            caller: Caller::Session(sid("s1")),
            amount: Some(AmountInput::Decimal("1".into())),
            receipt: ReceiptInput::default(),
            idempotency_key: None,
            credential: None,
        })),
        Outcome::Refused(Refusal::HoldSettling)
    );
    assert_eq!(
        mark(&mut w, Caller::Admin, "n1"),
        Outcome::SettlingMarked {
            hold_id: h,
            already: true
        }
    );
    assert_eq!(
        mark(&mut w, Caller::Admin, "other"),
        Outcome::Refused(Refusal::AlreadyExists)
    );
    w.now += 3_600_000;
    w.run(Command::RevokeSession {
        session_id: sid("nope"),
    });
    assert!(
        w.ledger.live_hold(h).is_some(),
        "a settling hold waits for reconciliation"
    );
    assert_eq!(w.ledger.settling_holds().count(), 1);
    assert_eq!(w.remaining("s1"), usd("15"));
    assert!(matches!(w.capture(h, None, None), Outcome::Captured { .. }));
    assert_eq!(w.ledger.settling_holds().count(), 0);
    // Reloading keeps a settling hold out of the expiry index.
    let h2 = approved(&w.authorize("s1", "1", "t", None));
    w.run(Command::MarkSettling(MarkSettling {
        hold_id: h2,
        caller: Caller::Admin,
        reference: "n2".into(),
    }));
    let reloaded = Ledger::from_records(w.ledger.records().collect::<Vec<_>>()).unwrap();
    assert_eq!(reloaded.digest(), w.ledger.digest());
}
