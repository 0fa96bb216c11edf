//! Property tests over random command sequences: caps are never exceeded,
//! replicas agree byte for byte, persisted records reload to the same state,
//! retries have one effect, and an independent model of holds agrees.

use std::collections::BTreeMap;

use ledger::*;
use proptest::prelude::*;

const SESSIONS: [&str; 3] = ["s0", "s1", "s2"];
const TOOLS: [&str; 2] = ["search", "gpu"];

#[derive(Clone, Debug)]
enum Op {
    Settling {
        hold: u8,
        as_session: Option<usize>,
    },
    Authorize {
        s: usize,
        dollars: u8,
        tool: usize,
        key: Option<u8>,
        ttl_s: u8,
    },
    Capture {
        hold: u8,
        cents: Option<u16>,
        key: Option<u8>,
        as_session: Option<usize>,
    },
    Void {
        hold: u8,
        key: Option<u8>,
        as_session: Option<usize>,
    },
    Revoke {
        s: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 1..15u8, 0..2usize, proptest::option::of(0..6u8), 5..90u8)
            .prop_map(|(s, dollars, tool, key, ttl_s)| Op::Authorize { s, dollars, tool, key, ttl_s }),
        3 => (0..24u8, proptest::option::of(0..1600u16), proptest::option::of(0..6u8), proptest::option::of(0..3usize))
            .prop_map(|(hold, cents, key, as_session)| Op::Capture { hold, cents, key, as_session }),
        2 => (0..24u8, proptest::option::of(0..6u8), proptest::option::of(0..3usize))
            .prop_map(|(hold, key, as_session)| Op::Void { hold, key, as_session }),
        1 => (0..3usize).prop_map(|s| Op::Revoke { s }),
        1 => (0..24u8, proptest::option::of(0..3usize)).prop_map(|(hold, as_session)| Op::Settling { hold, as_session }),
    ]
}

fn entries() -> impl Strategy<Value = Vec<(u64, bool, Vec<Op>)>> {
    // Time steps sometimes go backwards (a new leader with a slower clock).
    proptest::collection::vec(
        (0..40_000u64, any::<bool>(), proptest::collection::vec(op(), 1..6)),
        1..40,
    )
}

fn usd(d: u64) -> Amount {
    Amount(u128::from(d) * 1_000_000)
}

fn setup() -> Vec<Command> {
    let budget = |id: &str, cap: u64, parent: Option<&str>, tool_caps: Vec<(&str, u64)>| {
        Command::CreateBudget(CreateBudget {
            id: BudgetId::new(id).unwrap(),
            asset: Asset::usdc(),
            cap: usd(cap),
            tool_caps: tool_caps
                .into_iter()
                .map(|(t, c)| (Tool::new(t).unwrap(), usd(c)))
                .collect(),
            parent: parent.map(|p| BudgetId::new(p).unwrap()),
            blocked_tools: Default::default(),
        })
    };
    let session = |i: usize, cap: u64, budget: Option<&str>, tool_caps: Vec<(&str, u64)>| {
        Command::CreateSession(CreateSession {
            id: SessionId::new(SESSIONS[i]).unwrap(),
            token_hash: [i as u8; 32],
            asset: Asset::usdc(),
            cap: usd(cap),
            ttl_ms: 30 * 86_400_000,
            agent_id: format!("agent-{i}"),
            wallet_address: None,
            tool_caps: tool_caps
                .into_iter()
                .map(|(t, c)| (Tool::new(t).unwrap(), usd(c)))
                .collect(),
            budget: budget.map(|b| BudgetId::new(b).unwrap()),
            tools: None,
            live_holds_max: None,
        })
    };
    vec![
        budget("org", 40, None, vec![("gpu", 12)]),
        budget("team", 30, Some("org"), vec![]),
        session(0, 25, Some("team"), vec![("search", 8)]),
        session(1, 25, Some("team"), vec![]),
        session(2, 25, Some("org"), vec![("gpu", 20)]),
    ]
}

fn key(k: Option<u8>) -> Option<IdempotencyKey> {
    k.map(|k| IdempotencyKey::new(format!("key-{k}")).unwrap())
}

fn caller(as_session: Option<usize>) -> Caller {
    match as_session {
        None => Caller::Admin,
        Some(i) => Caller::Session(SessionId::new(SESSIONS[i]).unwrap()),
    }
}

fn command(op: &Op) -> Command {
    match op {
        Op::Authorize {
            s,
            dollars,
            tool,
            key: k,
            ttl_s,
        } => Command::Authorize(Authorize {
            session_id: SessionId::new(SESSIONS[*s]).unwrap(),
            amount: AmountInput::Decimal(dollars.to_string()),
            tool: Tool::new(TOOLS[*tool]).unwrap(),
            idempotency_key: key(*k),
            hold_ttl_ms: Some(u64::from(*ttl_s) * 1000),
            context: DecisionContext::default(),
            credential: None,
        }),
        Op::Capture {
            hold,
            cents,
            key: k,
            as_session,
        } => Command::Capture(Capture {
            hold_id: HoldId(u64::from(*hold)),
            caller: caller(*as_session),
            amount: cents.map(|c| AmountInput::Atomic(Amount(u128::from(c) * 10_000))),
            receipt: ReceiptInput::default(),
            idempotency_key: key(*k),
            credential: None,
        }),
        Op::Void {
            hold,
            key: k,
            as_session,
        } => Command::Void(Void {
            hold_id: HoldId(u64::from(*hold)),
            caller: caller(*as_session),
            idempotency_key: key(*k),
            credential: None,
        }),
        Op::Settling { hold, as_session } => Command::MarkSettling(MarkSettling {
            hold_id: HoldId(u64::from(*hold)),
            caller: caller(*as_session),
            reference: format!("payment-{hold}"),
        }),
        Op::Revoke { s } => Command::RevokeSession {
            session_id: SessionId::new(SESSIONS[*s]).unwrap(),
        },
    }
}

fn build(plan: &[(u64, bool, Vec<Op>)]) -> Vec<Entry> {
    let mut t = 1_000_000u64;
    let mut out = vec![Entry {
        time_ms: t,
        commands: setup(),
    }];
    for (step, backwards, ops) in plan {
        t = if *backwards {
            t.saturating_sub(*step / 4)
        } else {
            t + step
        };
        out.push(Entry {
            time_ms: t,
            commands: ops.iter().map(command).collect(),
        });
    }
    out
}

/// Applies the records a ledger reports as changed to a plain map, as the
/// node does with RocksDB.
fn persist(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, ledger: &mut Ledger) {
    let changes = ledger.take_changes();
    for key in changes.dirty {
        match ledger.encode_record(&key) {
            Some(v) => store.insert(key.encode(), v),
            None => store.remove(&key.encode()),
        };
    }
}

/// A model of holds written independently of the ledger: what is live, what
/// was spent, per session.
#[derive(Default)]
struct Model {
    live: BTreeMap<HoldId, (usize, Amount, u64)>,
    pinned: std::collections::BTreeSet<HoldId>,
    spent: [Amount; 3],
    now: u64,
}

impl Model {
    fn committed(&self, s: usize) -> Amount {
        let held: u128 = self
            .live
            .values()
            .filter(|(x, _, _)| *x == s)
            .map(|(_, a, _)| a.0)
            .sum();
        Amount(self.spent[s].0 + held)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn caps_hold_replicas_agree_and_records_reload(plan in entries()) {
        let entries = build(&plan);
        let mut a = Ledger::new();
        let mut b = Ledger::new();
        let mut store = BTreeMap::new();
        let mut model = Model::default();
        let mut first_results: BTreeMap<(usize, u8), Outcome> = BTreeMap::new();

        for (i, entry) in entries.iter().enumerate() {
            let out_a = a.apply(i as u64, entry);
            let out_b = b.apply(i as u64, entry);
            prop_assert_eq!(&out_a, &out_b);
            prop_assert_eq!(out_a.len(), entry.commands.len());
            a.check_invariants().map_err(TestCaseError::fail)?;
            persist(&mut store, &mut a);
            b.take_changes();

            // The model: expire, then follow the outcomes.
            model.now = model.now.max(entry.time_ms);
            let now = model.now;
            let pinned = model.pinned.clone();
            model.live.retain(|id, (_, _, exp)| *exp > now || pinned.contains(id));
            for (cmd, out) in entry.commands.iter().zip(&out_a) {
                match (cmd, out) {
                    (Command::Authorize(c), Outcome::Approved { approval, replayed }) => {
                        let s = SESSIONS.iter().position(|x| *x == c.session_id.as_str()).unwrap();
                        if !replayed {
                            model.live.insert(approval.hold_id, (s, approval.amount, approval.expires_at_ms));
                            prop_assert!(model.committed(s) <= usd(25), "model: session over its cap");
                        }
                        if let Some(k) = &c.idempotency_key {
                            let k: u8 = k.as_str()[4..].parse().unwrap();
                            match first_results.get(&(s, k)) {
                                Some(Outcome::Approved { approval: first, .. }) if *replayed => {
                                    prop_assert_eq!(first.hold_id, approval.hold_id);
                                }
                                _ => { first_results.insert((s, k), out.clone()); }
                            }
                        }
                    }
                    (_, Outcome::Captured { captured, replayed: false }) => {
                        let (s, amount, _) = model.live.remove(&captured.hold_id).expect("captured a hold the model has live");
                        prop_assert!(captured.captured <= amount);
                        model.spent[s] = Amount(model.spent[s].0 + captured.captured.0);
                    }
                    (_, Outcome::SettlingMarked { hold_id, already: false }) => {
                        prop_assert!(model.live.contains_key(hold_id), "pinned a hold the model lacks");
                        model.pinned.insert(*hold_id);
                    }
                    (_, Outcome::Voided { hold_id, replayed: false, .. }) => {
                        prop_assert!(model.live.remove(hold_id).is_some(), "voided a hold the model lacks");
                    }
                    _ => {}
                }
            }
            for (s, name) in SESSIONS.iter().enumerate() {
                let session = a.session(&SessionId::new(*name).unwrap()).unwrap();
                prop_assert_eq!(session.limit.usage.committed(), model.committed(s));
                prop_assert_eq!(session.limit.usage.spent, model.spent[s]);
            }

            // Restart mid-way from the persisted records.
            if i % 7 == 3 {
                let reloaded = Ledger::from_records(store.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(reloaded.digest(), a.digest());
                b = reloaded;
            }
        }
        prop_assert_eq!(a.digest(), b.digest());
        let reloaded = Ledger::from_records(store).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(reloaded.digest(), a.digest());
    }

    #[test]
    fn a_replayed_command_changes_nothing(plan in entries(), pick in any::<proptest::sample::Index>()) {
        let entries = build(&plan);
        let mut ledger = Ledger::new();
        let mut keyed = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let outs = ledger.apply(i as u64, entry);
            for (c, o) in entry.commands.iter().zip(outs) {
                let has_key = match c {
                    Command::Authorize(a) => a.idempotency_key.is_some() && matches!(o, Outcome::Approved { replayed: false, .. }),
                    Command::Capture(x) => x.idempotency_key.is_some() && matches!(o, Outcome::Captured { replayed: false, .. }),
                    Command::Void(x) => x.idempotency_key.is_some() && matches!(o, Outcome::Voided { replayed: false, .. }),
                    _ => false,
                };
                if has_key {
                    keyed.push((c.clone(), o));
                }
            }
        }
        prop_assume!(!keyed.is_empty());
        let (command, first) = keyed[pick.index(keyed.len())].clone();
        let before: Vec<_> = ledger.records().filter(|(k, _)| k[0] != b'M').collect();
        // Same time as the last entry: nothing expires in between.
        let out = ledger.apply(entries.len() as u64, &Entry { time_ms: ledger.now_ms(), commands: vec![command.clone()] });
        let after: Vec<_> = ledger.records().filter(|(k, _)| k[0] != b'M').collect();
        prop_assert_eq!(before, after);
        let (mut a, mut b) = (out[0].clone(), first);
        for o in [&mut a, &mut b] {
            match o {
                Outcome::Approved { replayed, .. } | Outcome::Captured { replayed, .. } | Outcome::Voided { replayed, .. } => *replayed = false,
                _ => {}
            }
        }
        prop_assert_eq!(a, b);
    }
}

/// Model-based test over the whole command set: budget create/update (tool
/// caps, blocked tools, nesting), session create (allowlists, live-hold
/// limits, replays with the same or another token), revoke, token rotation,
/// authorize (idempotent replays, denials of every kind), pin, capture and
/// void by every kind of caller, each with no credential, the session's
/// current token or a superseded/foreign one, time moving (expiring holds,
/// keys and sessions), and entries at and above the size limit. An
/// independent model predicts every outcome exactly (`TokenSuperseded`
/// included); after every entry the invariants hold and the state matches
/// the model, and a restart from the records gives the same digest.
mod whole {
    use std::collections::{BTreeMap, BTreeSet};

    use ledger::*;
    use proptest::prelude::*;

    const SESSIONS: [&str; 4] = ["s0", "s1", "s2", "s3"];
    const BUDGETS: [&str; 4] = ["org", "team", "lab", "ghost"];
    const TOOLS: [&str; 3] = ["search", "gpu", "casino"];
    const HOUR_MS: u64 = 3_600_000;

    fn tool(i: usize) -> Tool {
        Tool::new(TOOLS[i]).unwrap()
    }
    fn sid(i: usize) -> SessionId {
        SessionId::new(SESSIONS[i]).unwrap()
    }
    fn bid(i: usize) -> BudgetId {
        BudgetId::new(BUDGETS[i]).unwrap()
    }
    fn usd(d: u64) -> Amount {
        Amount(u128::from(d) * 1_000_000)
    }

    /// Small menus, so that repeats (replays) are common.
    fn tool_caps_menu(i: u8) -> BTreeMap<Tool, Amount> {
        match i % 4 {
            0 => BTreeMap::new(),
            1 => [(tool(1), usd(12))].into(),
            2 => [(tool(0), usd(6)), (tool(1), usd(30))].into(),
            _ => [(tool(1), usd(3))].into(),
        }
    }
    fn tool_set_menu(i: u8) -> BTreeSet<Tool> {
        match i % 4 {
            0 => BTreeSet::new(),
            1 => [tool(2)].into(),
            2 => [tool(0)].into(),
            _ => [tool(1), tool(2)].into(),
        }
    }
    fn allowlist_menu(i: u8) -> Option<BTreeSet<Tool>> {
        match i % 4 {
            0 | 1 => None,
            2 => Some([tool(0)].into()),
            _ => Some([tool(0), tool(1)].into()),
        }
    }
    fn live_max_menu(i: u8) -> Option<u32> {
        match i % 5 {
            0 | 1 => None,
            2 => Some(2),
            3 => Some(4),
            // Invalid: refused before it reaches the state.
            _ => Some(0),
        }
    }
    fn amount_menu(i: u8) -> AmountInput {
        match i % 10 {
            // Too precise for USDC: refused as an invalid amount.
            0 => AmountInput::Decimal("0.0000001".into()),
            // Zero: invalid.
            1 => AmountInput::Decimal("0".into()),
            2 => AmountInput::Atomic(Amount(1)),
            3 => AmountInput::Decimal("2.5".into()),
            n => AmountInput::Decimal(format!("{}", u64::from(n) * 2 - 5)),
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        CreateBudget {
            b: usize,
            cap: u8,
            parent: usize,
            caps: u8,
            blocked: u8,
        },
        UpdateBudget {
            b: usize,
            cap: Option<u8>,
            caps: Option<u8>,
            blocked: Option<u8>,
        },
        CreateSession {
            s: usize,
            token: u8,
            cap: u8,
            budget: Option<usize>,
            caps: u8,
            tools: u8,
            max: u8,
            short: bool,
        },
        Revoke {
            s: usize,
        },
        Rotate {
            s: usize,
            token: u8,
        },
        Authorize {
            s: usize,
            amount: u8,
            tool: usize,
            key: Option<u8>,
            ttl_s: u8,
            cred: Cred,
        },
        Settle {
            hold: u8,
            caller: u8,
            reference: u8,
        },
        Capture {
            hold: u8,
            caller: u8,
            cents: Option<u16>,
            key: Option<u8>,
            cred: Cred,
        },
        Void {
            hold: u8,
            caller: u8,
            key: Option<u8>,
            cred: Cred,
        },
        /// The previous command again: a retry (replays, "already").
        Again,
    }

    /// The session token a command comes with (`credential`), for an
    /// authorization and for a capture or void whose caller is a session.
    #[derive(Clone, Copy, Debug)]
    enum Cred {
        /// No credential: the admin's (or a batch's) command.
        Absent,
        /// The session's current token, as the plan left it.
        Current,
        /// The token the session had before its last rotation (one never
        /// issued if it was not rotated).
        Stale,
        /// The token `[t; 32]`: another session's, an old one, or none.
        Other(u8),
    }

    fn cred() -> impl Strategy<Value = Cred> {
        prop_oneof![
            5 => Just(Cred::Absent),
            4 => Just(Cred::Current),
            1 => Just(Cred::Stale),
            1 => (0..12u8).prop_map(Cred::Other),
        ]
    }

    /// A token no session is ever given.
    const NEVER_ISSUED: TokenHash = [0xEE; 32];

    /// What the plan's creations and rotations leave each session's token
    /// as, followed op by op while building (not by asking a ledger). It
    /// only steers `Cred::Current` and `Cred::Stale` towards the right
    /// token; whether a credential is accepted is the model's to predict.
    #[derive(Default)]
    struct Tokens {
        budgets: BTreeSet<usize>,
        /// Session index to (current, before the last rotation).
        sessions: BTreeMap<usize, (TokenHash, Option<TokenHash>)>,
    }

    impl Tokens {
        fn credential(&self, s: usize, c: Cred) -> Option<TokenHash> {
            let (current, before) = self.sessions.get(&s).copied().unwrap_or((NEVER_ISSUED, None));
            match c {
                Cred::Absent => None,
                Cred::Current => Some(current),
                Cred::Stale => Some(before.unwrap_or(NEVER_ISSUED)),
                Cred::Other(t) => Some([t; 32]),
            }
        }

        fn in_use(&self, token: u8) -> bool {
            self.sessions.values().any(|(t, _)| *t == [token; 32])
        }

        /// Follows an op the ledger is about to see.
        fn note(&mut self, op: &Op) {
            match op {
                Op::CreateBudget { b, parent, .. } => {
                    if *parent == *b || *parent >= 3 || self.budgets.contains(parent) {
                        self.budgets.insert(*b);
                    }
                }
                Op::CreateSession {
                    s, token, budget, max, ..
                } => {
                    let fine = budget.is_none_or(|b| self.budgets.contains(&b)) && *max % 5 != 4;
                    if fine && !self.sessions.contains_key(s) && !self.in_use(*token) {
                        self.sessions.insert(*s, ([*token; 32], None));
                    }
                }
                Op::Rotate { s, token } => {
                    if !self.in_use(*token) {
                        if let Some((current, before)) = self.sessions.get_mut(s) {
                            *before = Some(*current);
                            *current = [*token; 32];
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0..4usize, 1..80u8, 0..4usize, any::<u8>(), any::<u8>())
                .prop_map(|(b, cap, parent, caps, blocked)| Op::CreateBudget { b, cap, parent, caps, blocked }),
            2 => (0..4usize, proptest::option::of(1..80u8), proptest::option::of(any::<u8>()), proptest::option::of(any::<u8>()))
                .prop_map(|(b, cap, caps, blocked)| Op::UpdateBudget { b, cap, caps, blocked }),
            2 => (0..4usize, 0..6u8, prop_oneof![Just(25u8), 1..60u8], proptest::option::of(0..4usize), any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>())
                .prop_map(|(s, token, cap, budget, caps, tools, max, short)| Op::CreateSession { s, token, cap, budget, caps, tools, max, short }),
            1 => (0..4usize).prop_map(|s| Op::Revoke { s }),
            1 => (0..4usize, 0..12u8).prop_map(|(s, token)| Op::Rotate { s, token }),
            8 => (0..4usize, any::<u8>(), 0..3usize, proptest::option::of(0..5u8), 5..90u8, cred())
                .prop_map(|(s, amount, tool, key, ttl_s, cred)| Op::Authorize { s, amount, tool, key, ttl_s, cred }),
            2 => (0..16u8, 0..6u8, 0..2u8).prop_map(|(hold, caller, reference)| Op::Settle { hold, caller, reference }),
            3 => (0..16u8, 0..6u8, proptest::option::of(0..1600u16), proptest::option::of(0..4u8), cred())
                .prop_map(|(hold, caller, cents, key, cred)| Op::Capture { hold, caller, cents, key, cred }),
            3 => (0..16u8, 0..6u8, proptest::option::of(0..4u8), cred())
                .prop_map(|(hold, caller, key, cred)| Op::Void { hold, caller, key, cred }),
            3 => Just(Op::Again),
        ]
    }

    /// 0 admin, 1 gateway, 2.. a session.
    fn caller(i: u8) -> Caller {
        match caller_session(i) {
            Some(s) => Caller::Session(sid(s)),
            None if i == 0 => Caller::Admin,
            None => Caller::Gateway,
        }
    }
    fn caller_session(i: u8) -> Option<usize> {
        i.checked_sub(2).map(|n| usize::from(n) % SESSIONS.len())
    }
    /// A capture's or void's credential: a session caller's token; the
    /// admin and the gateway come without one.
    fn caller_credential(tokens: &Tokens, i: u8, c: Cred) -> Option<TokenHash> {
        caller_session(i).and_then(|s| tokens.credential(s, c))
    }
    fn key(k: Option<u8>) -> Option<IdempotencyKey> {
        k.map(|k| IdempotencyKey::new(format!("key-{k}")).unwrap())
    }

    fn command(op: &Op, tokens: &Tokens) -> Command {
        match op {
            Op::CreateBudget {
                b,
                cap,
                parent,
                caps,
                blocked,
            } => Command::CreateBudget(CreateBudget {
                id: bid(*b),
                asset: Asset::usdc(),
                cap: usd(u64::from(*cap)),
                tool_caps: tool_caps_menu(*caps),
                parent: (*parent != *b && *parent < 3).then(|| bid(*parent)),
                blocked_tools: tool_set_menu(*blocked),
            }),
            Op::UpdateBudget { b, cap, caps, blocked } => Command::UpdateBudget(UpdateBudget {
                id: bid(*b),
                cap: cap.map(|c| usd(u64::from(c))),
                tool_caps: caps.map(tool_caps_menu),
                blocked_tools: blocked.map(tool_set_menu),
            }),
            Op::CreateSession {
                s,
                token,
                cap,
                budget,
                caps,
                tools,
                max,
                short,
            } => Command::CreateSession(CreateSession {
                id: sid(*s),
                token_hash: [*token; 32],
                asset: Asset::usdc(),
                cap: usd(u64::from(*cap)),
                ttl_ms: if *short { 2 * HOUR_MS } else { 30 * 24 * HOUR_MS },
                agent_id: format!("agent-{s}"),
                wallet_address: None,
                tool_caps: tool_caps_menu(*caps),
                budget: budget.map(bid),
                tools: allowlist_menu(*tools),
                live_holds_max: live_max_menu(*max),
            }),
            Op::Revoke { s } => Command::RevokeSession { session_id: sid(*s) },
            Op::Rotate { s, token } => Command::RotateSessionToken {
                session_id: sid(*s),
                token_hash: [*token; 32],
            },
            Op::Authorize {
                s,
                amount,
                tool: t,
                key: k,
                ttl_s,
                cred,
            } => Command::Authorize(Authorize {
                session_id: sid(*s),
                amount: amount_menu(*amount),
                tool: tool(*t),
                idempotency_key: key(*k),
                hold_ttl_ms: Some(u64::from(*ttl_s) * 1000),
                context: DecisionContext::default(),
                credential: tokens.credential(*s, *cred),
            }),
            Op::Settle {
                hold,
                caller: c,
                reference,
            } => Command::MarkSettling(MarkSettling {
                hold_id: HoldId(u64::from(*hold)),
                caller: caller(*c),
                reference: format!("payment-{reference}"),
            }),
            Op::Capture {
                hold,
                caller: c,
                cents,
                key: k,
                cred,
            } => Command::Capture(Capture {
                hold_id: HoldId(u64::from(*hold)),
                caller: caller(*c),
                amount: cents.map(|c| AmountInput::Atomic(Amount(u128::from(c) * 10_000))),
                receipt: ReceiptInput::default(),
                idempotency_key: key(*k),
                credential: caller_credential(tokens, *c, *cred),
            }),
            Op::Void {
                hold,
                caller: c,
                key: k,
                cred,
            } => Command::Void(Void {
                hold_id: HoldId(u64::from(*hold)),
                caller: caller(*c),
                idempotency_key: key(*k),
                credential: caller_credential(tokens, *c, *cred),
            }),
            Op::Again => Command::RevokeSession { session_id: sid(3) },
        }
    }

    /// How the clock moves before an entry.
    #[derive(Clone, Debug)]
    enum Step {
        Forward(u64),
        Back(u64),
        /// Past hold lifetimes, the idempotency window and short sessions.
        Leap,
    }

    /// An entry's commands; `Fill` repeats one command up to (or one past)
    /// the size limit.
    #[derive(Clone, Debug)]
    enum Body {
        Ops(Vec<Op>),
        Fill { op: Op, over: bool },
    }

    fn entries() -> impl Strategy<Value = Vec<(Step, Body)>> {
        let step = prop_oneof![
            8 => (0..40_000u64).prop_map(Step::Forward),
            1 => (0..10_000u64).prop_map(Step::Back),
            1 => Just(Step::Leap),
        ];
        let body = prop_oneof![
            30 => proptest::collection::vec(op(), 1..6).prop_map(Body::Ops),
            1 => (op(), any::<bool>()).prop_map(|(op, over)| Body::Fill { op, over }),
        ];
        proptest::collection::vec((step, body), 1..40)
    }

    fn setup() -> Vec<Op> {
        vec![
            Op::CreateBudget {
                b: 0,
                cap: 60,
                parent: 3,
                caps: 1,
                blocked: 0,
            },
            Op::CreateBudget {
                b: 1,
                cap: 40,
                parent: 0,
                caps: 0,
                blocked: 0,
            },
            Op::CreateSession {
                s: 0,
                token: 0,
                cap: 25,
                budget: Some(1),
                caps: 2,
                tools: 0,
                max: 0,
                short: false,
            },
            Op::CreateSession {
                s: 1,
                token: 1,
                cap: 25,
                budget: Some(0),
                caps: 0,
                tools: 3,
                max: 3,
                short: false,
            },
            Op::CreateSession {
                s: 2,
                token: 2,
                cap: 25,
                budget: None,
                caps: 3,
                tools: 0,
                max: 2,
                short: true,
            },
        ]
    }

    fn build(plan: &[(Step, Body)]) -> Vec<Entry> {
        let mut t = 1_000_000u64;
        let mut tokens = Tokens::default();
        let mut setup_commands = Vec::new();
        for op in setup() {
            setup_commands.push(command(&op, &tokens));
            tokens.note(&op);
        }
        let mut out = vec![Entry {
            time_ms: t,
            commands: setup_commands,
        }];
        let mut last = command(&Op::Revoke { s: 3 }, &tokens);
        // A command with the credential its op asks for as the plan stands
        // (`Again` repeats the previous command as it was, credential and
        // all). An entry over the size limit is refused whole: it changes
        // no token.
        let mut next = |op: &Op, applied: bool| {
            if !matches!(op, Op::Again) {
                last = command(op, &tokens);
                if applied {
                    tokens.note(op);
                }
            }
            last.clone()
        };
        for (step, body) in plan {
            t = match step {
                Step::Forward(d) => t + d,
                Step::Back(d) => t.saturating_sub(*d),
                Step::Leap => t + 25 * HOUR_MS,
            };
            let commands = match body {
                Body::Ops(ops) => ops.iter().map(|op| next(op, true)).collect(),
                Body::Fill { op, over } => vec![next(op, !*over); ENTRY_COMMANDS_MAX + usize::from(*over)],
            };
            out.push(Entry { time_ms: t, commands });
        }
        out
    }

    // ---- the model ------------------------------------------------------

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct Use {
        cap: u128,
        spent: u128,
        held: u128,
    }
    impl Use {
        fn new(cap: Amount) -> Use {
            Use {
                cap: cap.0,
                spent: 0,
                held: 0,
            }
        }
        fn left(&self) -> u128 {
            self.cap.saturating_sub(self.spent + self.held)
        }
        fn fits(&self, a: u128) -> bool {
            self.spent + self.held + a <= self.cap
        }
    }

    #[derive(Clone, Debug)]
    struct MBudget {
        create: CreateBudget,
        limit: Use,
        tool_caps: BTreeMap<Tool, Use>,
        blocked: BTreeSet<Tool>,
        parent: Option<BudgetId>,
    }

    #[derive(Clone, Debug)]
    struct MSession {
        create: CreateSession,
        token: [u8; 32],
        limit: Use,
        tool_caps: BTreeMap<Tool, Use>,
        expires_at_ms: u64,
        revoked: bool,
    }

    #[derive(Clone, Debug)]
    struct MHold {
        session: SessionId,
        tool: Tool,
        amount: u128,
        expires_at_ms: u64,
        pinned: Option<String>,
    }

    #[derive(Clone, Debug)]
    struct MKey {
        owner: SessionId,
        fingerprint: String,
        outcome: Outcome,
        expires_at_ms: u64,
    }

    #[derive(Default)]
    struct Model {
        now: u64,
        budgets: BTreeMap<BudgetId, MBudget>,
        sessions: BTreeMap<SessionId, MSession>,
        holds: BTreeMap<u64, MHold>,
        next_hold: u64,
        next_receipt: u64,
        keys: BTreeMap<(String, IdempotencyKey), MKey>,
    }

    fn refused(r: Refusal) -> Outcome {
        Outcome::Refused(r)
    }
    fn invalid(field: &str) -> Outcome {
        refused(Refusal::Invalid(InvalidCommand::new(field, "")))
    }
    /// Messages are the ledger's wording, not the model's: compare kinds.
    fn normalize(o: &Outcome) -> Outcome {
        match o {
            Outcome::Refused(Refusal::Invalid(e)) => invalid(&e.field),
            Outcome::Refused(Refusal::InvalidAmount { .. }) => {
                refused(Refusal::InvalidAmount { message: String::new() })
            }
            other => other.clone(),
        }
    }
    fn replayed(o: &Outcome) -> Outcome {
        let mut o = o.clone();
        match &mut o {
            Outcome::Approved { replayed, .. }
            | Outcome::Captured { replayed, .. }
            | Outcome::Voided { replayed, .. } => *replayed = true,
            _ => {}
        }
        o
    }

    impl Model {
        fn chain(&self, start: &Option<BudgetId>) -> Vec<BudgetId> {
            let mut out = Vec::new();
            let mut next = start.clone();
            while let Some(id) = next {
                let Some(b) = self.budgets.get(&id) else { break };
                next = b.parent.clone();
                out.push(id);
            }
            out
        }

        fn advance(&mut self, t: u64) {
            if t <= self.now {
                return;
            }
            self.now = t;
            let due: Vec<u64> = self
                .holds
                .iter()
                .filter(|(_, h)| h.pinned.is_none() && h.expires_at_ms <= t)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                self.release(id, 0);
            }
            self.keys.retain(|_, k| k.expires_at_ms > t);
        }

        /// Ends a hold with `captured` of it spent, at every level.
        fn release(&mut self, id: u64, captured: u128) {
            let h = self.holds.remove(&id).unwrap();
            let chain = self.chain(&self.sessions[&h.session].create.budget);
            let s = self.sessions.get_mut(&h.session).unwrap();
            for u in std::iter::once(&mut s.limit).chain(s.tool_caps.get_mut(&h.tool)) {
                u.held -= h.amount;
                u.spent += captured;
            }
            for b in chain {
                let b = self.budgets.get_mut(&b).unwrap();
                for u in std::iter::once(&mut b.limit).chain(b.tool_caps.get_mut(&h.tool)) {
                    u.held -= h.amount;
                    u.spent += captured;
                }
            }
        }

        fn live_of(&self, s: &SessionId) -> usize {
            self.holds.values().filter(|h| &h.session == s).count()
        }

        fn remember(
            &mut self,
            scope: String,
            key: &Option<IdempotencyKey>,
            owner: &SessionId,
            fp: String,
            o: &Outcome,
        ) {
            if let Some(k) = key {
                self.keys.insert(
                    (scope, k.clone()),
                    MKey {
                        owner: owner.clone(),
                        fingerprint: fp,
                        outcome: o.clone(),
                        expires_at_ms: self.now + IDEMPOTENCY_WINDOW_MS,
                    },
                );
            }
        }

        fn apply(&mut self, at: Position, c: &Command) -> Outcome {
            match c {
                Command::CreateBudget(c) => self.create_budget(c),
                Command::UpdateBudget(c) => self.update_budget(c),
                Command::CreateSession(c) => self.create_session(c),
                Command::RevokeSession { session_id } => match self.sessions.get_mut(session_id) {
                    None => refused(Refusal::UnknownSession),
                    Some(s) => {
                        let already = s.revoked;
                        s.revoked = true;
                        Outcome::SessionRevoked { already }
                    }
                },
                Command::RotateSessionToken { session_id, token_hash } => {
                    if self.sessions.values().any(|s| &s.token == token_hash) {
                        return refused(Refusal::AlreadyExists);
                    }
                    match self.sessions.get_mut(session_id) {
                        None => refused(Refusal::UnknownSession),
                        Some(s) => {
                            s.token = *token_hash;
                            Outcome::TokenRotated
                        }
                    }
                }
                Command::Authorize(c) => self.authorize(at, c),
                Command::MarkSettling(c) => self.settle(c),
                Command::Capture(c) => self.capture(at, c),
                Command::Void(c) => self.void(at, c),
            }
        }

        fn create_budget(&mut self, c: &CreateBudget) -> Outcome {
            if let Some(b) = self.budgets.get(&c.id) {
                // A replay matches the budget as it is now (its cap and
                // tool caps after any update), as the ledger does.
                return if Amount(b.limit.cap) == c.cap
                    && b.create.parent == c.parent
                    && b.tool_caps
                        .iter()
                        .map(|(t, u)| (t.clone(), Amount(u.cap)))
                        .collect::<BTreeMap<_, _>>()
                        == c.tool_caps
                    && b.blocked == c.blocked_tools
                {
                    Outcome::BudgetCreated { existed: true }
                } else {
                    refused(Refusal::AlreadyExists)
                };
            }
            if let Some(p) = &c.parent {
                if !self.budgets.contains_key(p) {
                    return refused(Refusal::UnknownBudget { budget_id: p.clone() });
                }
                if self.chain(&c.parent).len() >= usize::from(BUDGET_DEPTH_MAX) {
                    return refused(Refusal::BudgetDepthExceeded);
                }
            }
            self.budgets.insert(
                c.id.clone(),
                MBudget {
                    create: c.clone(),
                    limit: Use::new(c.cap),
                    tool_caps: c.tool_caps.iter().map(|(t, a)| (t.clone(), Use::new(*a))).collect(),
                    blocked: c.blocked_tools.clone(),
                    parent: c.parent.clone(),
                },
            );
            Outcome::BudgetCreated { existed: false }
        }

        fn update_budget(&mut self, c: &UpdateBudget) -> Outcome {
            if c.cap.is_none() && c.tool_caps.is_none() && c.blocked_tools.is_none() {
                return invalid("cap");
            }
            let Some(b) = self.budgets.get(&c.id) else {
                return refused(Refusal::UnknownBudget {
                    budget_id: c.id.clone(),
                });
            };
            if let Some(cap) = c.cap {
                let committed = b.limit.spent + b.limit.held;
                if cap.0 < committed {
                    return refused(Refusal::CapBelowUsage {
                        committed: Amount(committed),
                    });
                }
            }
            let mut caps = BTreeMap::new();
            if let Some(new) = &c.tool_caps {
                for (t, cap) in new {
                    let mut u = b.tool_caps.get(t).copied().unwrap_or_else(|| {
                        // A new tool cap counts the live holds it covers.
                        let held = self
                            .holds
                            .values()
                            .filter(|h| &h.tool == t)
                            .filter(|h| self.chain(&self.sessions[&h.session].create.budget).contains(&c.id))
                            .map(|h| h.amount)
                            .sum();
                        Use { cap: 0, spent: 0, held }
                    });
                    if cap.0 < u.spent + u.held {
                        return refused(Refusal::CapBelowUsage {
                            committed: Amount(u.spent + u.held),
                        });
                    }
                    u.cap = cap.0;
                    caps.insert(t.clone(), u);
                }
            }
            let b = self.budgets.get_mut(&c.id).unwrap();
            if let Some(cap) = c.cap {
                b.limit.cap = cap.0;
            }
            if c.tool_caps.is_some() {
                b.tool_caps = caps;
            }
            if let Some(blocked) = &c.blocked_tools {
                b.blocked = blocked.clone();
            }
            Outcome::BudgetUpdated
        }

        fn create_session(&mut self, c: &CreateSession) -> Outcome {
            if matches!(c.live_holds_max, Some(0)) {
                return invalid("live_holds_max");
            }
            if let Some(s) = self.sessions.get(&c.id) {
                let mut first = s.create.clone();
                first.token_hash = s.token;
                first.ttl_ms = c.ttl_ms;
                return if &first == c {
                    Outcome::SessionCreated {
                        existed: true,
                        expires_at_ms: s.expires_at_ms,
                    }
                } else {
                    refused(Refusal::AlreadyExists)
                };
            }
            if self.sessions.values().any(|s| s.token == c.token_hash) {
                return refused(Refusal::AlreadyExists);
            }
            if let Some(b) = &c.budget {
                if !self.budgets.contains_key(b) {
                    return refused(Refusal::UnknownBudget { budget_id: b.clone() });
                }
            }
            let expires_at_ms = self.now + c.ttl_ms;
            self.sessions.insert(
                c.id.clone(),
                MSession {
                    create: c.clone(),
                    token: c.token_hash,
                    limit: Use::new(c.cap),
                    tool_caps: c.tool_caps.iter().map(|(t, a)| (t.clone(), Use::new(*a))).collect(),
                    expires_at_ms,
                    revoked: false,
                },
            );
            Outcome::SessionCreated {
                existed: false,
                expires_at_ms,
            }
        }

        fn authorize(&mut self, at: Position, c: &Authorize) -> Outcome {
            if matches!(&c.amount, AmountInput::Decimal(t) if t == "0") {
                return invalid("amount");
            }
            let Some(s) = self.sessions.get(&c.session_id) else {
                return Outcome::Denied(DenyReason::UnknownSession);
            };
            // A credential must be the session's token as it is now: an
            // older one is refused before anything else is looked at (a
            // remembered key, a revocation), and the refusal is not
            // remembered.
            if c.credential.is_some_and(|t| t != s.token) {
                return refused(Refusal::TokenSuperseded);
            }
            let scope = format!("s/{}", c.session_id);
            let fp = format!("{:?}", (&c.amount, &c.tool, &c.hold_ttl_ms, &c.context));
            if let Some(k) = c
                .idempotency_key
                .as_ref()
                .and_then(|k| self.keys.get(&(scope.clone(), k.clone())))
            {
                return if k.fingerprint == fp {
                    replayed(&k.outcome)
                } else {
                    refused(Refusal::IdempotencyConflict)
                };
            }
            let dead = if s.revoked {
                Some(DenyReason::SessionRevoked)
            } else if self.now >= s.expires_at_ms {
                Some(DenyReason::SessionExpired)
            } else {
                None
            };
            let amount = match &c.amount {
                _ if dead.is_some() => 0,
                AmountInput::Atomic(a) => a.0,
                AmountInput::Decimal(t) if t == "0.0000001" => {
                    return refused(Refusal::InvalidAmount { message: String::new() })
                }
                AmountInput::Decimal(t) => amount::parse_decimal(t, 6).unwrap().0,
            };
            let chain = self.chain(&s.create.budget);
            let limit = s.create.live_holds_max.unwrap_or(SESSION_LIVE_HOLDS_DEFAULT);
            let denial = if dead.is_some() {
                dead
            } else if s.create.tools.as_ref().is_some_and(|t| !t.contains(&c.tool)) {
                Some(DenyReason::ToolNotAllowed)
            } else if let Some(b) = chain.iter().find(|b| self.budgets[*b].blocked.contains(&c.tool)) {
                Some(DenyReason::ToolBlocked { budget_id: b.clone() })
            } else if self.live_of(&c.session_id) >= limit as usize {
                Some(DenyReason::TooManyHolds { limit })
            } else if let Some(u) = s.tool_caps.get(&c.tool).filter(|u| !u.fits(amount)) {
                Some(DenyReason::ToolCap {
                    tool: c.tool.clone(),
                    budget_id: None,
                    remaining: Amount(u.left()),
                    asset: s.create.asset.clone(),
                })
            } else if !s.limit.fits(amount) {
                Some(DenyReason::SessionCap {
                    remaining: Amount(s.limit.left()),
                    asset: s.create.asset.clone(),
                })
            } else {
                chain.iter().find_map(|id| {
                    let b = &self.budgets[id];
                    if let Some(u) = b.tool_caps.get(&c.tool).filter(|u| !u.fits(amount)) {
                        return Some(DenyReason::ToolCap {
                            tool: c.tool.clone(),
                            budget_id: Some(id.clone()),
                            remaining: Amount(u.left()),
                            asset: s.create.asset.clone(),
                        });
                    }
                    (!b.limit.fits(amount)).then(|| DenyReason::BudgetCap {
                        budget_id: id.clone(),
                        remaining: Amount(b.limit.left()),
                        asset: s.create.asset.clone(),
                    })
                })
            };
            if let Some(reason) = denial {
                let o = Outcome::Denied(reason);
                self.remember(scope, &c.idempotency_key, &c.session_id, fp, &o);
                return o;
            }
            let s = self.sessions.get_mut(&c.session_id).unwrap();
            let asset = s.create.asset.clone();
            for u in std::iter::once(&mut s.limit).chain(s.tool_caps.get_mut(&c.tool)) {
                u.held += amount;
            }
            let session_remaining = Amount(s.limit.left());
            for id in &chain {
                let b = self.budgets.get_mut(id).unwrap();
                for u in std::iter::once(&mut b.limit).chain(b.tool_caps.get_mut(&c.tool)) {
                    u.held += amount;
                }
            }
            let hold_id = self.next_hold;
            self.next_hold += 1;
            let expires_at_ms = self.now + c.hold_ttl_ms.unwrap_or(HOLD_TTL_DEFAULT_MS);
            self.holds.insert(
                hold_id,
                MHold {
                    session: c.session_id.clone(),
                    tool: c.tool.clone(),
                    amount,
                    expires_at_ms,
                    pinned: None,
                },
            );
            let o = Outcome::Approved {
                approval: Approval {
                    at,
                    hold_id: HoldId(hold_id),
                    amount: Amount(amount),
                    asset,
                    session_remaining,
                    expires_at_ms,
                },
                replayed: false,
            };
            self.remember(scope, &c.idempotency_key, &c.session_id, fp, &o);
            o
        }

        fn not_live(&self, id: HoldId) -> Outcome {
            if id.0 < self.next_hold {
                refused(Refusal::AuthorizationNotActive {
                    status: HoldStatus::Expired,
                })
            } else {
                refused(Refusal::UnknownAuthorization)
            }
        }

        fn settle(&mut self, c: &MarkSettling) -> Outcome {
            let not_live = self.not_live(c.hold_id);
            let Some(h) = self.holds.get_mut(&c.hold_id.0) else {
                return not_live;
            };
            if matches!(c.caller, Caller::Session(_)) {
                return refused(Refusal::Forbidden);
            }
            match &h.pinned {
                Some(r) if *r == c.reference => Outcome::SettlingMarked {
                    hold_id: c.hold_id,
                    already: true,
                },
                Some(_) => refused(Refusal::AlreadyExists),
                None => {
                    h.pinned = Some(c.reference.clone());
                    Outcome::SettlingMarked {
                        hold_id: c.hold_id,
                        already: false,
                    }
                }
            }
        }

        /// The hold a caller may resolve, or the answer.
        fn resolvable(
            &self,
            id: HoldId,
            caller: &Caller,
            credential: Option<TokenHash>,
            key: &Option<IdempotencyKey>,
            fp: &str,
        ) -> Result<MHold, Outcome> {
            // A session caller's credential comes first: it must be that
            // session's current token (a session that does not exist has
            // none). The admin and the gateway are not sessions: nothing
            // to check.
            if let (Caller::Session(s), Some(t)) = (caller, credential) {
                if self.sessions.get(s).is_none_or(|x| x.token != t) {
                    return Err(refused(Refusal::TokenSuperseded));
                }
            }
            if let Some(k) = key
                .as_ref()
                .and_then(|k| self.keys.get(&(format!("h/{}", id.0), k.clone())))
            {
                if let Caller::Session(s) = caller {
                    if *s != k.owner {
                        return Err(refused(Refusal::Forbidden));
                    }
                }
                return Err(if k.fingerprint == fp {
                    replayed(&k.outcome)
                } else {
                    refused(Refusal::IdempotencyConflict)
                });
            }
            let Some(h) = self.holds.get(&id.0) else {
                return Err(self.not_live(id));
            };
            match caller {
                Caller::Session(s) if *s != h.session => Err(refused(Refusal::Forbidden)),
                Caller::Session(_) if h.pinned.is_some() => Err(refused(Refusal::HoldSettling)),
                _ => Ok(h.clone()),
            }
        }

        fn capture(&mut self, at: Position, c: &Capture) -> Outcome {
            if matches!(c.amount, Some(AmountInput::Atomic(Amount(0)))) {
                return invalid("amount");
            }
            let fp = format!("{:?}", ("capture", &c.amount, &c.receipt));
            let h = match self.resolvable(c.hold_id, &c.caller, c.credential, &c.idempotency_key, &fp) {
                Ok(h) => h,
                Err(o) => return o,
            };
            let captured = match &c.amount {
                None => h.amount,
                Some(AmountInput::Atomic(a)) => a.0,
                Some(AmountInput::Decimal(_)) => unreachable!("not generated"),
            };
            if captured > h.amount {
                return refused(Refusal::AmountExceedsHold { held: Amount(h.amount) });
            }
            let receipt_id = ReceiptId(self.next_receipt);
            self.next_receipt += 1;
            self.release(c.hold_id.0, captured);
            let o = Outcome::Captured {
                captured: Captured {
                    at,
                    hold_id: c.hold_id,
                    receipt_id,
                    captured: Amount(captured),
                    asset: self.sessions[&h.session].create.asset.clone(),
                    released: Amount(h.amount - captured),
                },
                replayed: false,
            };
            self.remember(format!("h/{}", c.hold_id.0), &c.idempotency_key, &h.session, fp, &o);
            o
        }

        fn void(&mut self, at: Position, c: &Void) -> Outcome {
            let fp = "void".to_string();
            let h = match self.resolvable(c.hold_id, &c.caller, c.credential, &c.idempotency_key, &fp) {
                Ok(h) => h,
                Err(o) => return o,
            };
            self.release(c.hold_id.0, 0);
            let o = Outcome::Voided {
                at,
                hold_id: c.hold_id,
                released: Amount(h.amount),
                asset: self.sessions[&h.session].create.asset.clone(),
                replayed: false,
            };
            self.remember(format!("h/{}", c.hold_id.0), &c.idempotency_key, &h.session, fp, &o);
            o
        }

        /// The ledger's state agrees with the model's, level by level.
        fn agrees(&self, l: &Ledger) -> Result<(), TestCaseError> {
            let same = |what: String, u: &CapUsage, m: &Use| -> Result<(), TestCaseError> {
                prop_assert_eq!(
                    (u.cap.0, u.usage.spent.0, u.usage.held.0),
                    (m.cap, m.spent, m.held),
                    "{}",
                    what
                );
                Ok(())
            };
            prop_assert_eq!(l.counts().0, self.budgets.len());
            prop_assert_eq!(l.counts().1, self.sessions.len());
            prop_assert_eq!(l.counts().2, self.holds.len());
            prop_assert_eq!(l.counts().3, self.keys.len());
            for (id, m) in &self.budgets {
                let b = l.budget(id).unwrap();
                same(format!("budget {id}"), &b.limit, &m.limit)?;
                prop_assert_eq!(b.tool_caps.len(), m.tool_caps.len());
                for (t, u) in &m.tool_caps {
                    same(format!("budget {id} tool {t}"), &b.tool_caps[t], u)?;
                }
                prop_assert_eq!(&b.blocked_tools, &m.blocked);
            }
            for (id, m) in &self.sessions {
                let s = l.session(id).unwrap();
                same(format!("session {id}"), &s.limit, &m.limit)?;
                for (t, u) in &m.tool_caps {
                    same(format!("session {id} tool {t}"), &s.tool_caps[t], u)?;
                }
                prop_assert_eq!(s.token_hash, m.token);
                prop_assert_eq!(s.revoked, m.revoked);
                prop_assert!(l.session_by_token(&m.token).is_some_and(|x| &x.id == id));
            }
            for (id, h) in &self.holds {
                let lh = l.live_hold(HoldId(*id)).unwrap();
                prop_assert_eq!(
                    (&lh.session_id, lh.amount.0, lh.settling.is_some()),
                    (&h.session, h.amount, h.pinned.is_some())
                );
            }
            Ok(())
        }
    }

    fn persist(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, ledger: &mut Ledger) {
        for key in ledger.take_changes().dirty {
            match ledger.encode_record(&key) {
                Some(v) => store.insert(key.encode(), v),
                None => store.remove(&key.encode()),
            };
        }
    }

    /// What kind of answer an outcome is, for the coverage check.
    fn kind(o: &Outcome) -> String {
        match o {
            Outcome::Denied(r) => format!("denied:{}", r.code()),
            Outcome::Refused(r) => format!("refused:{}", r.code()),
            Outcome::Approved { replayed, .. } => format!("approved:{replayed}"),
            Outcome::Captured { replayed, .. } => format!("captured:{replayed}"),
            Outcome::Voided { replayed, .. } => format!("voided:{replayed}"),
            Outcome::SessionCreated { existed, .. } => format!("session_created:{existed}"),
            Outcome::BudgetCreated { existed } => format!("budget_created:{existed}"),
            Outcome::SettlingMarked { already, .. } => format!("settling:{already}"),
            Outcome::SessionRevoked { already } => format!("revoked:{already}"),
            other => format!("{other:?}").split([' ', '{']).next().unwrap_or("").to_string(),
        }
    }

    fn caller_sid(c: &Caller) -> Option<&SessionId> {
        match c {
            Caller::Session(s) => Some(s),
            _ => None,
        }
    }

    /// The generator reaches every kind of answer (else the model test
    /// would pass while testing little): a fixed-seed sample of plans.
    #[test]
    fn the_generator_reaches_every_outcome() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let mut seen = BTreeSet::new();
        for _ in 0..400 {
            let plan = entries().new_tree(&mut runner).unwrap().current();
            let mut ledger = Ledger::new();
            // Every token each session has had, read after each entry.
            let mut had: BTreeMap<SessionId, BTreeSet<TokenHash>> = BTreeMap::new();
            for (i, entry) in build(&plan).iter().enumerate() {
                for (c, o) in entry.commands.iter().zip(ledger.apply(i as u64 + 1, entry)) {
                    seen.insert(kind(&o));
                    // Credentials, command by command: refused when
                    // superseded (also when it is a token the session had
                    // before a rotation), accepted when current.
                    let (what, session, credential) = match c {
                        Command::Authorize(a) => ("authorize", Some(&a.session_id), a.credential),
                        Command::Capture(x) => ("capture", caller_sid(&x.caller), x.credential),
                        Command::Void(x) => ("void", caller_sid(&x.caller), x.credential),
                        _ => continue,
                    };
                    let Some(credential) = credential else { continue };
                    seen.insert(format!("{}:{what}", kind(&o)));
                    let old = session
                        .and_then(|s| had.get(s))
                        .is_some_and(|h| h.contains(&credential));
                    if old && matches!(o, Outcome::Refused(Refusal::TokenSuperseded)) {
                        seen.insert(format!("{}:{what}:rotated_away", kind(&o)));
                    }
                }
                for s in SESSIONS
                    .iter()
                    .filter_map(|s| ledger.session(&SessionId::new(*s).unwrap()))
                {
                    had.entry(s.id.clone()).or_default().insert(s.token_hash);
                }
            }
        }
        let want = [
            "approved:false",
            "approved:true",
            "captured:false",
            "captured:true",
            "voided:false",
            "voided:true",
            "session_created:false",
            "session_created:true",
            "budget_created:false",
            "budget_created:true",
            "settling:false",
            "settling:true",
            "revoked:false",
            "revoked:true",
            "TokenRotated",
            "BudgetUpdated",
            "denied:unknown_session",
            "denied:session_revoked",
            "denied:session_expired",
            "denied:session_cap",
            "denied:tool_cap",
            "denied:budget_cap",
            "denied:tool_not_allowed",
            "denied:tool_blocked",
            "denied:live_holds_max",
            "refused:invalid_command",
            "refused:invalid_amount",
            "refused:already_exists",
            "refused:unknown_budget",
            "refused:cap_below_usage",
            "refused:unknown_session",
            "refused:unknown_authorization",
            "refused:authorization_expired",
            "refused:amount_exceeds_hold",
            "refused:forbidden",
            "refused:idempotency_conflict",
            "refused:hold_settling",
            "refused:token_superseded",
            "refused:token_superseded:authorize",
            "refused:token_superseded:capture",
            "refused:token_superseded:void",
            "approved:false:authorize",
            "approved:true:authorize",
            "captured:false:capture",
            "voided:false:void",
            "refused:token_superseded:authorize:rotated_away",
            "refused:token_superseded:capture:rotated_away",
            "refused:token_superseded:void:rotated_away",
        ];
        let missing: Vec<_> = want.iter().filter(|k| !seen.contains(**k)).collect();
        assert!(missing.is_empty(), "never generated: {missing:?}; seen: {seen:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn every_command_matches_the_model(plan in entries()) {
            let entries = build(&plan);
            let mut ledger = Ledger::new();
            let mut replica = Ledger::new();
            let mut store = BTreeMap::new();
            let mut model = Model::default();
            for (i, entry) in entries.iter().enumerate() {
                let index = i as u64 + 1;
                let outcomes = ledger.apply(index, entry);
                prop_assert_eq!(&outcomes, &replica.apply(index, entry));
                prop_assert_eq!(outcomes.len(), entry.commands.len());
                ledger.check_invariants().map_err(TestCaseError::fail)?;
                persist(&mut store, &mut ledger);
                replica.take_changes();

                let expected: Vec<Outcome> = if entry.commands.len() > ENTRY_COMMANDS_MAX {
                    vec![invalid("commands"); entry.commands.len()]
                } else {
                    model.advance(entry.time_ms);
                    entry
                        .commands
                        .iter()
                        .enumerate()
                        .map(|(n, c)| {
                            let at = Position { log_index: index, batch_position: n as u32, time_ms: model.now };
                            model.apply(at, c)
                        })
                        .collect()
                };
                for (n, (got, want)) in outcomes.iter().zip(&expected).enumerate() {
                    prop_assert_eq!(normalize(got), want.clone(), "entry {} command {}: {:?}", i, n, entry.commands[n]);
                }
                model.agrees(&ledger)?;

                // Restart from the persisted records now and then.
                if i % 5 == 2 {
                    let reloaded = Ledger::from_records(store.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(reloaded.digest(), ledger.digest());
                    replica = reloaded;
                }
            }
            let reloaded = Ledger::from_records(store).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(reloaded.digest(), ledger.digest());
            prop_assert_eq!(replica.digest(), ledger.digest());
        }
    }
}
