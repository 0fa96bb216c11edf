//! Harness shared by the ledger's scenario tests: id and amount builders and a
//! `World` that applies commands as log entries, checking invariants after each.
//! Each test file adds its own command builders in an `impl World` of its own.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use ledger::*;

pub const USDC: u8 = 6;

pub fn usd(text: &str) -> Amount {
    amount::parse_decimal(text, USDC).unwrap()
}

pub fn tool(t: &str) -> Tool {
    Tool::new(t).unwrap()
}

pub fn tools(list: &[&str]) -> BTreeSet<Tool> {
    list.iter().map(|t| tool(t)).collect()
}

pub fn tool_caps(caps: &[(&str, &str)]) -> BTreeMap<Tool, Amount> {
    caps.iter().map(|(t, c)| (tool(t), usd(c))).collect()
}

pub fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

pub fn bid(s: &str) -> BudgetId {
    BudgetId::new(s).unwrap()
}

pub fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::new(k).unwrap())
}

/// The hold an `Approved` outcome carries; panics on any other outcome.
pub fn approved(o: &Outcome) -> HoldId {
    match o {
        Outcome::Approved { approval, .. } => approval.hold_id,
        other => panic!("expected approval, got {other:?}"),
    }
}

/// A ledger fed one entry at a time, at log time `now`.
pub struct World {
    pub ledger: Ledger,
    pub index: u64,
    pub now: u64,
    /// The last session token byte handed out by a test's session builder.
    pub tokens: u8,
    /// Drop the ledger's changes after each entry (for tests that never read them).
    pub drop_changes: bool,
}

impl World {
    pub fn new() -> Self {
        World {
            ledger: Ledger::new(),
            index: 0,
            now: 1_000_000,
            tokens: 0,
            drop_changes: false,
        }
    }

    /// A world that drops the ledger's changes after each entry.
    pub fn dropping_changes() -> Self {
        World {
            drop_changes: true,
            ..World::new()
        }
    }

    /// Applies `commands` as the next entry and checks the ledger's
    /// invariants. The ledger's changes are left for the test to take
    /// unless `drop_changes` is set.
    pub fn apply(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
        self.index += 1;
        let out = self.ledger.apply(
            self.index,
            &Entry {
                time_ms: self.now,
                commands,
            },
        );
        self.ledger.check_invariants().unwrap();
        if self.drop_changes {
            self.ledger.take_changes();
        }
        out
    }

    /// Applies one command as its own entry.
    pub fn run(&mut self, command: Command) -> Outcome {
        self.apply(vec![command]).pop().unwrap()
    }

    /// Creates a USDC budget and asserts it is new.
    pub fn create_budget(
        &mut self,
        id: &str,
        cap: &str,
        parent: Option<&str>,
        caps: &[(&str, &str)],
        blocked: &[&str],
    ) {
        let out = self.run(Command::CreateBudget(CreateBudget {
            id: bid(id),
            asset: Asset::usdc(),
            cap: usd(cap),
            tool_caps: tool_caps(caps),
            parent: parent.map(bid),
            blocked_tools: tools(blocked),
        }));
        assert_eq!(out, Outcome::BudgetCreated { existed: false });
    }
}
