//! Cross-check of checker 5 with stateright's `LinearizabilityTester`: for
//! small per-session histories (authorizations and reads of one session,
//! no expiry, no captures), an exhaustive search over every order real time
//! allows, without the servers' log positions. Unknown operations are left
//! in flight: the tester may place them anywhere after their invocation, or
//! nowhere.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

use super::{CheckOptions, Verdict};
use crate::history::{History, Op, Outcome, Request, Response};

/// Steps of the sequential object one session's search may take. The
/// search has no memoization (exponential in the worst case); past this it
/// stops and the session counts as inconclusive, not as a violation.
pub const CROSS_CHECK_STEPS_MAX: u64 = 300_000;

/// Unknown operations a cross-checked session may have: stateright places
/// each anywhere after its invocation (or nowhere) without a return to prune
/// on, so their arrangements multiply.
pub const CROSS_CHECK_UNKNOWN_OPS_MAX: usize = 4;

thread_local! {
    static STEPS: Cell<u64> = const { Cell::new(0) };
}

/// One session as a sequential object.
#[derive(Clone, Debug, Default)]
pub struct SessionObject {
    pub cap: u64,
    pub spent: u64,
    pub held: u64,
    /// Approved keys and the `remaining` they answered.
    pub keys: BTreeMap<String, (u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOp {
    Authorize { amount: u64, key: String },
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionRet {
    Approved {
        amount: u64,
        remaining: u64,
        replayed: bool,
    },
    Denied,
    Read {
        spent: u64,
        held: u64,
        remaining: u64,
    },
    /// The step budget is used up: equals no real answer, so every branch
    /// of the search ends at once.
    Exhausted,
}

impl SequentialSpec for SessionObject {
    type Op = SessionOp;
    type Ret = SessionRet;

    fn invoke(&mut self, op: &SessionOp) -> SessionRet {
        let steps = STEPS.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        if steps > CROSS_CHECK_STEPS_MAX {
            return SessionRet::Exhausted;
        }
        match op {
            SessionOp::Authorize { amount, key } => {
                if let Some((amount, remaining)) = self.keys.get(key) {
                    return SessionRet::Approved {
                        amount: *amount,
                        remaining: *remaining,
                        replayed: true,
                    };
                }
                let committed = self.spent + self.held;
                if committed.checked_add(*amount).is_some_and(|t| t <= self.cap) {
                    self.held += amount;
                    let remaining = self.cap - self.spent - self.held;
                    self.keys.insert(key.clone(), (*amount, remaining));
                    SessionRet::Approved {
                        amount: *amount,
                        remaining,
                        replayed: false,
                    }
                } else {
                    SessionRet::Denied
                }
            }
            SessionOp::Read => SessionRet::Read {
                spent: self.spent,
                held: self.held,
                remaining: self.cap.saturating_sub(self.spent + self.held),
            },
        }
    }
}

fn to_op(r: &Request) -> Option<SessionOp> {
    match r {
        Request::Authorize { amount, key, .. } => Some(SessionOp::Authorize {
            amount: *amount,
            key: key.clone(),
        }),
        Request::Read { .. } => Some(SessionOp::Read),
        _ => None,
    }
}

fn to_ret(r: &Response) -> Option<SessionRet> {
    match r {
        Response::Decision {
            approved: true,
            amount: Some(amount),
            remaining: Some(remaining),
            replayed,
            ..
        } => Some(SessionRet::Approved {
            amount: *amount,
            remaining: *remaining,
            replayed: *replayed,
        }),
        Response::Decision { approved: false, .. } => Some(SessionRet::Denied),
        Response::Read {
            spent, held, remaining, ..
        } => Some(SessionRet::Read {
            spent: *spent,
            held: *held,
            remaining: *remaining,
        }),
        _ => None,
    }
}

/// Why a session's cross-check did not pass.
#[derive(Debug, PartialEq, Eq)]
pub enum CrossError {
    /// Not linearizable, or a malformed history.
    Invalid(String),
    /// The search hit [`CROSS_CHECK_STEPS_MAX`].
    Inconclusive,
}

const INCONCLUSIVE: &str = "search budget used up";

/// Checks one session's operations.
pub fn check_session(cap: u64, ops: &[&Op]) -> Result<(), CrossError> {
    STEPS.with(|s| s.set(0));
    match check_session_inner(cap, ops) {
        Ok(()) => Ok(()),
        Err(e) if e == INCONCLUSIVE => Err(CrossError::Inconclusive),
        Err(e) => Err(CrossError::Invalid(e)),
    }
}

fn check_session_inner(cap: u64, ops: &[&Op]) -> Result<(), String> {
    // (time, 0 = invoke / 1 = return, op). Invocations first at equal times:
    // that only makes operations more concurrent.
    let mut events: Vec<(u64, u8, &Op)> = Vec::new();
    for op in ops {
        match op.outcome {
            Outcome::Fail { .. } => continue,
            Outcome::Info { .. } => events.push((op.invoke_ns, 0, op)),
            Outcome::Ok { .. } => {
                events.push((op.invoke_ns, 0, op));
                events.push((op.complete_ns, 1, op));
            }
        }
    }
    events.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.id.cmp(&b.2.id)));
    let mut tester = LinearizabilityTester::new(SessionObject {
        cap,
        ..SessionObject::default()
    });
    for (_, kind, op) in &events {
        let Some(sop) = to_op(&op.request) else {
            return Err(format!("op {} is not an authorization or read", op.id));
        };
        if *kind == 0 {
            tester
                .on_invoke(op.process, sop)
                .map_err(|e| format!("malformed history: {e}"))?;
        } else {
            let Some(ret) = op.ok().and_then(to_ret) else {
                return Err(format!("op {} has an answer the object cannot give", op.id));
            };
            tester
                .on_return(op.process, ret)
                .map_err(|e| format!("malformed history: {e}"))?;
        }
    }
    if tester.is_consistent() {
        Ok(())
    } else if STEPS.with(|s| s.get()) > CROSS_CHECK_STEPS_MAX {
        Err(INCONCLUSIVE.into())
    } else {
        Err(format!(
            "no order of these {} operations that real time allows explains their results",
            events.iter().filter(|e| e.1 == 0).count()
        ))
    }
}

/// The cross-check over every eligible session.
pub fn cross_check(history: &History, options: CheckOptions) -> Verdict {
    let mut v = Verdict::new("stateright-cross-check");
    let mut by_session: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in &history.ops {
        by_session.entry(op.request.session()).or_default().push(op);
    }
    let end_wall = history.ops.iter().map(|o| o.complete_wall_ms).max().unwrap_or(0);
    let (mut checked, mut skipped, mut inconclusive) = (0usize, 0usize, 0usize);
    for s in &history.setup.sessions {
        let Some(ops) = by_session.get(s.id.as_str()) else {
            continue;
        };
        let simple = s.budget.is_none()
            && s.tool_caps.is_empty()
            && s.expires_at_ms > end_wall
            && ops.iter().all(|o| match &o.request {
                Request::Authorize { hold_seconds, .. } => {
                    o.invoke_wall_ms.saturating_add(hold_seconds.saturating_mul(1000)) > end_wall
                }
                Request::Read { .. } => true,
                _ => false,
            });
        let size = ops.iter().filter(|o| o.fail_code().is_none()).count();
        let unknown = ops.iter().filter(|o| o.is_info()).count();
        if !simple || size > options.cross_check_ops_max || size == 0 || unknown > CROSS_CHECK_UNKNOWN_OPS_MAX {
            skipped += 1;
            continue;
        }
        match check_session(s.cap, ops) {
            Ok(()) => checked += 1,
            Err(CrossError::Inconclusive) => inconclusive += 1,
            Err(CrossError::Invalid(e)) => {
                checked += 1;
                v.violation(format!("session {}: {e}", s.id));
            }
        }
    }
    v.stat("sessions_checked", checked);
    v.stat("sessions_skipped", skipped);
    v.stat("sessions_inconclusive", inconclusive);
    v
}
