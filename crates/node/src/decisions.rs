//! The console's recent decisions: a ring of the last applied authorizes,
//! captures and voids on this node, fed by the state machine (as an
//! [`ApplyObserver`]) on every replica, read by `GET /v1/decisions/recent`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ledger::{Command, Entry, Outcome};
use serde::{Deserialize, Serialize};
use storage::ApplyObserver;

/// How many recent decisions each node keeps for its console.
pub const RECENT_DECISIONS_MAX: usize = 200;

/// One applied authorize, capture or void, for the console.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppliedDecision {
    pub log_index: u64,
    pub batch_position: u32,
    pub time_ms: u64,
    pub kind: String,
    pub session_id: Option<String>,
    pub tool: Option<String>,
    pub authorization_id: Option<String>,
    /// `approved`, a denial reason, `captured`, `voided`, or a refusal code.
    pub result: String,
}

/// The ring of recent decisions. Clones share it.
#[derive(Clone, Default)]
pub struct RecentDecisions {
    recent: Arc<Mutex<VecDeque<AppliedDecision>>>,
}

impl RecentDecisions {
    pub fn new() -> Self {
        RecentDecisions {
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(RECENT_DECISIONS_MAX))),
        }
    }

    /// The decisions kept, newest first.
    pub fn recent(&self) -> Vec<AppliedDecision> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    fn record_recent(&self, log_index: u64, time_ms: u64, commands: &[Command], outcomes: &[Outcome]) {
        let Ok(mut recent) = self.recent.lock() else { return };
        // Only the last RECENT_DECISIONS_MAX of a big entry can survive in
        // the ring: do not build the others.
        let skip = commands.len().saturating_sub(RECENT_DECISIONS_MAX);
        for (i, (c, o)) in commands.iter().zip(outcomes).enumerate().skip(skip) {
            let (kind, session_id, tool) = match c {
                Command::Authorize(a) => ("authorize", Some(a.session_id.to_string()), Some(a.tool.to_string())),
                Command::Capture(_) => ("capture", None, None),
                Command::Void(_) => ("void", None, None),
                _ => continue,
            };
            let (result, authorization_id) = match o {
                Outcome::Approved { approval, .. } => ("approved".to_string(), Some(approval.hold_id.to_string())),
                Outcome::Denied(reason) => (reason.code().to_string(), None),
                Outcome::Captured { captured, .. } => ("captured".to_string(), Some(captured.hold_id.to_string())),
                Outcome::Voided { hold_id, .. } => ("voided".to_string(), Some(hold_id.to_string())),
                Outcome::Refused(r) => (r.code().to_string(), None),
                _ => continue,
            };
            if recent.len() == RECENT_DECISIONS_MAX {
                recent.pop_front();
            }
            recent.push_back(AppliedDecision {
                log_index,
                batch_position: i as u32,
                time_ms,
                kind: kind.to_string(),
                session_id,
                tool,
                authorization_id,
                result,
            });
        }
    }
}

impl ApplyObserver for RecentDecisions {
    fn applied(&self, log_index: u64, entry: &Entry, outcomes: &[Outcome]) {
        self.record_recent(log_index, entry.time_ms, &entry.commands, outcomes);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ledger::*;

    use super::*;

    fn authorize(session: &str, atomic: u128) -> Command {
        Command::Authorize(Authorize {
            session_id: SessionId::new(session).unwrap(),
            amount: AmountInput::Atomic(Amount(atomic)),
            tool: Tool::new("search").unwrap(),
            idempotency_key: None,
            hold_ttl_ms: None,
            context: DecisionContext::default(),
            credential: None,
        })
    }

    #[test]
    fn keeps_authorizations_newest_first_and_skips_other_commands() {
        let create = Command::CreateSession(CreateSession {
            id: SessionId::new("s1").unwrap(),
            token_hash: [1; 32],
            asset: Asset::usdc(),
            cap: Amount(10),
            ttl_ms: 60_000,
            agent_id: "agent".into(),
            wallet_address: None,
            tool_caps: BTreeMap::new(),
            budget: None,
            tools: None,
            live_holds_max: None,
        });
        let entry = Entry {
            time_ms: 1_000,
            commands: vec![create, authorize("s1", 4), authorize("s1", 7), authorize("nobody", 1)],
        };
        let outcomes = Ledger::new().apply(3, &entry);
        let ring = RecentDecisions::new();
        ring.applied(3, &entry, &outcomes);
        let kept = ring.recent();
        let summary: Vec<(u32, &str, &str)> = kept
            .iter()
            .map(|d| (d.batch_position, d.kind.as_str(), d.result.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (3, "authorize", "unknown_session"),
                (2, "authorize", "session_cap"),
                (1, "authorize", "approved"),
            ]
        );
        assert!(kept.iter().all(|d| d.log_index == 3 && d.time_ms == 1_000));
        assert_eq!(kept[2].session_id.as_deref(), Some("s1"));
        assert_eq!(kept[2].tool.as_deref(), Some("search"));
        assert!(kept[2].authorization_id.is_some());
    }
}
