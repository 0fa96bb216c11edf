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
        }),
        Op::Void {
            hold,
            key: k,
            as_session,
        } => Command::Void(Void {
            hold_id: HoldId(u64::from(*hold)),
            caller: caller(*as_session),
            idempotency_key: key(*k),
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
