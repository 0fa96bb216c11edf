//! A deliberately unsafe decision path, compiled only with the
//! `fault-injection` feature and active only with
//! `SPENDCAP_FAULT=local-decide`: the node approves an authorization from its
//! own local (possibly stale) state and answers at once, proposing the real
//! command in the background. The fault suite must catch it (overspend, lost
//! acknowledgements). Never enabled in normal builds.

use std::sync::atomic::{AtomicU64, Ordering};

use ledger::{Command, Outcome};

use crate::http::AppState;
use crate::proposer::Decided;

static FAKE_HOLD_IDS: AtomicU64 = AtomicU64::new(u64::MAX / 2);

pub fn local_decide_enabled() -> bool {
    std::env::var("SPENDCAP_FAULT").as_deref() == Ok("local-decide")
}

/// Approves from local state if the session's cap seems to have room.
pub fn local_decide(s: &AppState, command: &Command) -> Option<Decided> {
    let Command::Authorize(a) = command else { return None };
    let state = s.sm.read();
    let session = state.ledger.session(&a.session_id)?;
    let amount = a.amount.resolve(session.asset.decimals).ok()?;
    if session.limit.remaining() < amount {
        return None;
    }
    let remaining = session.limit.remaining().saturating_sub(amount);
    let index = state.last_applied.map(|l| l.index).unwrap_or(0);
    let hold_id = ledger::HoldId(FAKE_HOLD_IDS.fetch_add(1, Ordering::Relaxed));
    let proposer = s.proposer.clone();
    let timeout = s.limits.write_timeout;
    let background = command.clone();
    tokio::spawn(async move {
        let _ = proposer.propose(background, timeout).await;
    });
    Some(Decided {
        outcome: Outcome::Approved {
            approval: ledger::Approval {
                at: ledger::Position {
                    log_index: index,
                    batch_position: 0,
                    time_ms: state.ledger.now_ms(),
                },
                hold_id,
                amount,
                session_remaining: remaining,
                expires_at_ms: state.ledger.now_ms() + ledger::HOLD_TTL_DEFAULT_MS,
            },
            replayed: false,
        },
        log_index: index,
        batch_position: 0,
        time_ms: state.ledger.now_ms(),
    })
}
