//! Checker 6: `no-early-expiry`. Holds, sessions and idempotency keys
//! expire by log time, which the leader stamps from its wall clock within a
//! bound (docs/ARCHITECTURE.md, "Time and expiry"). Whatever the nodes'
//! clocks do (the `clock` schedule moves them by a day), log time must never
//! run ahead of real time (the harness's clock) by more than the allowed
//! skew plus `clock_slack_ms`; so nothing may expire earlier than that:
//!
//! 1. every log time the server returned is at most the answer's real time
//!    plus the slack;
//! 2. no authorization is denied `session_expired` before the session's
//!    expiry (minus the slack) in real time;
//! 3. no capture or void is refused `authorization_expired`, and no hold is
//!    `expired` in the final state, before its deadline (minus the slack) in
//!    real time.
//!
//! The other checkers trust the log time the server states (the model
//! expires holds at it), so without this one a cluster that expired
//! everything at once, consistently, would pass.

use std::collections::HashMap;

use super::{CheckOptions, Verdict};
use crate::final_state::FinalState;
use crate::history::{History, Request, Response};

pub fn check_early_expiry(history: &History, final_state: Option<&FinalState>, options: CheckOptions) -> Verdict {
    let mut v = Verdict::new("no-early-expiry");
    let slack = options.clock_slack_ms;
    let mut max_ahead_ms: i128 = i128::MIN;
    let mut checked_times = 0usize;

    // Deadlines: sessions from the setup and the run, holds from approvals.
    let mut session_expiry: HashMap<&str, u64> = history
        .setup
        .sessions
        .iter()
        .map(|s| (s.id.as_str(), s.expires_at_ms))
        .collect();
    for op in &history.ops {
        if let (Request::CreateSession { session, .. }, Some(Response::SessionCreated { expires_at_ms, .. })) =
            (&op.request, op.ok())
        {
            session_expiry.insert(session.as_str(), *expires_at_ms);
        }
    }
    let mut hold_expiry: HashMap<&str, u64> = HashMap::new();
    for op in &history.ops {
        if let Some(Response::Decision {
            approved: true,
            authorization_id: Some(id),
            expires_at_ms: Some(e),
            ..
        }) = op.ok()
        {
            hold_expiry.insert(id.as_str(), *e);
        }
    }

    for op in &history.ops {
        // 1. Log time against real time.
        if let Some(t) = op.log_time_ms {
            checked_times += 1;
            let ahead = i128::from(t) - i128::from(op.complete_wall_ms);
            max_ahead_ms = max_ahead_ms.max(ahead);
            if ahead > i128::from(slack) {
                v.violation(format!(
                    "op {} on node{}: log time {t} is {ahead} ms ahead of the real time of its answer (allowed {slack})",
                    op.id, op.node
                ));
            }
        }
        // 2. Sessions.
        if let (
            Request::Authorize { session, .. },
            Some(Response::Decision {
                approved: false,
                reason: Some(reason),
                ..
            }),
        ) = (&op.request, op.ok())
        {
            if reason == "session_expired" {
                if let Some(e) = session_expiry.get(session.as_str()) {
                    if op.invoke_wall_ms.saturating_add(slack) < *e {
                        v.violation(format!(
                            "op {} on node{}: session {session} denied as expired {} ms before its expiry",
                            op.id,
                            op.node,
                            e - op.invoke_wall_ms
                        ));
                    }
                }
            }
        }
        // 3. Holds.
        if let (
            Request::Capture { authorization, .. } | Request::Void { authorization, .. },
            Some("authorization_expired"),
        ) = (&op.request, op.fail_code())
        {
            if let Some(e) = hold_expiry.get(authorization.as_str()) {
                if op.complete_wall_ms.saturating_add(slack) < *e {
                    v.violation(format!(
                        "op {} on node{}: {authorization} refused as expired {} ms before its deadline",
                        op.id,
                        op.node,
                        e - op.complete_wall_ms
                    ));
                }
            }
        }
    }
    if let Some(fs) = final_state {
        for node in &fs.nodes {
            for (id, h) in &node.holds {
                if h.status == "expired" && fs.read_end_wall_ms.saturating_add(slack) < h.expires_at_ms {
                    v.violation(format!(
                        "final state on node{}: {id} is expired {} ms before its deadline",
                        node.node,
                        h.expires_at_ms - fs.read_end_wall_ms
                    ));
                }
            }
        }
    }
    v.stat("log_times_checked", checked_times);
    if max_ahead_ms > i128::MIN {
        v.stat("log_time_ahead_of_real_time_max_ms", max_ahead_ms as i64);
    }
    v
}

/// Checker 7: `superseded-tokens`. A session token stops working once a
/// rotation that replaced it was acknowledged: no authorization sent with it
/// after that may be answered (a `401` is the right answer; a decision, even
/// a denial, means the node took the old token).
pub fn check_superseded_tokens(history: &History) -> Verdict {
    let mut v = Verdict::new("superseded-tokens");
    // session -> tokens in the order they were handed out, with the real
    // time their successor was acknowledged (u64::MAX: still current).
    let mut issued: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
    let mut by_time: Vec<&crate::history::Op> = history
        .ops
        .iter()
        .filter(|o| matches!(o.request, Request::CreateSession { .. } | Request::RotateToken { .. }))
        .collect();
    by_time.sort_by_key(|o| o.complete_ns);
    for op in by_time {
        let token = match op.ok() {
            Some(Response::SessionCreated { token: Some(t), .. }) | Some(Response::TokenRotated { token: t }) => t,
            _ => continue,
        };
        let list = issued.entry(op.request.session()).or_default();
        if matches!(op.request, Request::RotateToken { .. }) {
            for (_, superseded) in list.iter_mut() {
                if *superseded == u64::MAX {
                    *superseded = op.complete_ns;
                }
            }
        }
        list.push((token.as_str(), u64::MAX));
    }
    let mut checked = 0usize;
    for op in &history.ops {
        let (
            Request::Authorize {
                session,
                token: Some(token),
                ..
            },
            Some(_),
        ) = (&op.request, op.ok())
        else {
            continue;
        };
        checked += 1;
        let Some(list) = issued.get(session.as_str()) else {
            continue;
        };
        if let Some((_, superseded)) = list.iter().find(|(t, _)| t == token) {
            if *superseded < op.invoke_ns {
                v.violation(format!(
                    "op {} on node{}: {session}'s token was accepted {:.3} s after a rotation replaced it",
                    op.id,
                    op.node,
                    (op.invoke_ns - superseded) as f64 / 1e9
                ));
            }
        }
    }
    v.stat("authorizations_with_session_tokens", checked);
    v
}
