//! Fault hooks, compiled only with the `fault-injection` feature and active
//! only when named in `SPENDCAP_FAULT` (a comma-separated list). Never
//! enabled in normal builds.
//!
//! - `local-decide`: a deliberately unsafe decision path: the node approves
//!   an authorization from its own local (possibly stale) state and answers
//!   at once, proposing the real command in the background. The fault suite
//!   must catch it (overspend, lost acknowledgements).
//! - `clock`: the node's wall clock is the system clock plus an offset in
//!   milliseconds (signed decimal) read from `<data dir>/fault-clock-offset-ms`
//!   (re-read at most every `CLOCK_OFFSET_REFRESH`; missing or unreadable
//!   means 0). Containers share the host's kernel clock, so the fault suite
//!   skews a node's clock this way (`docker cp` of the file).
//! - `clock-unbounded`: as `clock`, and the leader stamps its wall clock
//!   without the skew bound (`clock.rs`): the fault suite must find the
//!   early expiries this causes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ledger::{Command, Outcome};

use crate::node_reads::NodeReads;

static FAKE_HOLD_IDS: AtomicU64 = AtomicU64::new(u64::MAX / 2);

/// Whether `SPENDCAP_FAULT` names `mode`.
fn enabled(mode: &str) -> bool {
    std::env::var("SPENDCAP_FAULT").is_ok_and(|v| v.split(',').any(|m| m.trim() == mode))
}

pub fn local_decide_enabled() -> bool {
    enabled("local-decide")
}

/// The leader stamps its wall clock without the skew bound.
pub fn clock_unbounded() -> bool {
    static UNBOUNDED: OnceLock<bool> = OnceLock::new();
    *UNBOUNDED.get_or_init(|| enabled("clock-unbounded"))
}

/// The file the clock offset is read from.
pub const CLOCK_OFFSET_FILE: &str = "fault-clock-offset-ms";
/// How often the offset file is read again.
const CLOCK_OFFSET_REFRESH: Duration = Duration::from_millis(50);

static CLOCK_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
static CLOCK_OFFSET: Mutex<Option<(Instant, i64)>> = Mutex::new(None);

/// Called once at start with the data dir: turns the clock hook on when
/// `SPENDCAP_FAULT` names `clock` or `clock-unbounded`.
pub fn init_clock(data_dir: &std::path::Path) {
    let on = enabled("clock") || enabled("clock-unbounded");
    let _ = CLOCK_FILE.set(on.then(|| data_dir.join(CLOCK_OFFSET_FILE)));
    if on {
        tracing::warn!(file = %data_dir.join(CLOCK_OFFSET_FILE).display(), "fault injection: the wall clock is skewed by this file");
    }
}

/// The injected offset of the wall clock, milliseconds (0 when off).
pub fn clock_offset_ms() -> i64 {
    let Some(Some(path)) = CLOCK_FILE.get() else { return 0 };
    let Ok(mut cached) = CLOCK_OFFSET.lock() else { return 0 };
    let now = Instant::now();
    if let Some((at, offset)) = *cached {
        if now.duration_since(at) < CLOCK_OFFSET_REFRESH {
            return offset;
        }
    }
    let offset = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(0);
    *cached = Some((now, offset));
    offset
}

/// The `local-decide` approval: made up from this node's local state when
/// the session's cap seems to have room, positioned at the index this node
/// has applied. The HTTP layer answers with it at once and proposes the
/// real command in the background (`http/authorizations.rs`).
pub fn local_approval(local: &NodeReads<'_>, command: &Command) -> Option<Outcome> {
    let Command::Authorize(a) = command else { return None };
    let read = local.session(&a.session_id)?;
    let session = &read.session;
    let amount = a.amount.resolve(session.asset.decimals).ok()?;
    if session.limit.remaining() < amount {
        return None;
    }
    let now_ms = local.now_ms();
    Some(Outcome::Approved {
        approval: ledger::Approval {
            at: ledger::Position {
                log_index: read.applied_index,
                batch_position: 0,
                time_ms: now_ms,
            },
            hold_id: ledger::HoldId(FAKE_HOLD_IDS.fetch_add(1, Ordering::Relaxed)),
            amount,
            asset: session.asset.clone(),
            session_remaining: session.limit.remaining().saturating_sub(amount),
            expires_at_ms: now_ms + ledger::HOLD_TTL_DEFAULT_MS,
        },
        replayed: false,
    })
}
