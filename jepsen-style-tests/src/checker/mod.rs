//! The checkers. Each gives a [`Verdict`]; the run is valid when all are.
//!
//! 1. `no-overspend`: acknowledged approvals never exceed any cap, at any
//!    moment (a sweep over real time that needs no log order), every read
//!    obeys its cap, and so does the final state on every node.
//! 2. `no-lost-acknowledgement`: every acknowledged approval, capture and void
//!    is in the final state of every node; the nodes agree, digests too.
//! 3. `denial-left-nothing`: every hold in the final state comes from an
//!    approval; a denied key left no hold; totals equal the holds.
//! 4. `one-hold-per-key`: at most one hold per idempotency key.
//! 5. `linearizable`: ok operations in log order agree with real time and
//!    with a sequential model, result by result; unknowns were resolved;
//!    small sessions are cross-checked with stateright.
//! 6. `no-early-expiry`: log time never ran ahead of real time by more than
//!    the slack, and nothing expired before its time (`expiry.rs`).
//! 7. `superseded-tokens`: no session token was accepted after a rotation
//!    that replaced it was acknowledged (`expiry.rs`).
//!
//! Sessions created during the run (fresh sessions of every workload) join
//! the setup as the checkers see it: the workload uses a session only after
//! its creation was acknowledged.

mod cross;
mod expiry;
mod linear;
mod safety;

use serde::Serialize;

use crate::final_state::FinalState;
use crate::history::{History, Request, Response, SessionSpec};

pub use cross::cross_check;
pub use expiry::{check_early_expiry, check_superseded_tokens};
pub use linear::check_linearizable;
pub(crate) use linear::Resolution;
pub use safety::{check_denials, check_lost_acks, check_one_hold_per_key, check_overspend};

/// Violations kept in full per checker (the count goes on).
pub const VIOLATIONS_KEPT_MAX: usize = 50;

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub checker: &'static str,
    pub valid: bool,
    pub violation_count: usize,
    pub violations: Vec<String>,
    /// Counts of what was checked.
    pub stats: serde_json::Map<String, serde_json::Value>,
}

impl Verdict {
    pub fn new(checker: &'static str) -> Verdict {
        Verdict {
            checker,
            valid: true,
            violation_count: 0,
            violations: Vec::new(),
            stats: serde_json::Map::new(),
        }
    }

    pub fn violation(&mut self, text: impl Into<String>) {
        self.valid = false;
        self.violation_count += 1;
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(text.into());
        }
    }

    pub fn stat(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.stats.insert(key.to_string(), value.into());
    }
}

/// Knobs of the checkers.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// How far the cluster's log clock may be from the harness's clock when
    /// a log time is bounded by a request's real times (same host clock; this
    /// covers millisecond rounding and scheduling).
    pub clock_slack_ms: u64,
    /// Sessions with at most this many operations are cross-checked with
    /// stateright's exhaustive linearizability search.
    pub cross_check_ops_max: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            clock_slack_ms: 250,
            cross_check_ops_max: 16,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub valid: bool,
    pub verdicts: Vec<Verdict>,
}

/// Runs every checker. Without a final state (a history whose final read
/// failed), the checkers that need it say invalid.
pub fn check_all(history: &History, final_state: Option<&FinalState>, options: CheckOptions) -> CheckReport {
    let with_fresh = with_fresh_sessions(history);
    let history = &with_fresh;
    let mut verdicts = vec![
        check_overspend(history, final_state, options),
        check_lost_acks(history, final_state),
        check_denials(history, final_state),
        check_one_hold_per_key(history, final_state),
    ];
    let mut linear = check_linearizable(history, final_state, options);
    let cross = cross_check(history, options);
    // The cross-check is part of checker 5.
    for v in &cross.violations {
        linear.violation(format!("stateright: {v}"));
    }
    for (k, v) in cross.stats {
        linear.stats.insert(format!("stateright_{k}"), v);
    }
    verdicts.push(linear);
    verdicts.push(check_early_expiry(history, final_state, options));
    verdicts.push(check_superseded_tokens(history));
    CheckReport {
        valid: verdicts.iter().all(|v| v.valid),
        verdicts,
    }
}

/// The history with the sessions created during the run added to its setup
/// (with the cap asked for and the expiry the server answered).
pub fn with_fresh_sessions(history: &History) -> History {
    let mut h = history.clone();
    let known: std::collections::BTreeSet<String> = h.setup.sessions.iter().map(|s| s.id.clone()).collect();
    let mut added = std::collections::BTreeSet::new();
    for op in &history.ops {
        if let (
            Request::CreateSession {
                session, cap, budget, ..
            },
            Some(Response::SessionCreated { expires_at_ms, .. }),
        ) = (&op.request, op.ok())
        {
            if known.contains(session) || !added.insert(session.clone()) {
                continue;
            }
            h.setup.sessions.push(SessionSpec {
                id: session.clone(),
                workload: op.workload,
                cap: *cap,
                budget: budget.clone(),
                tool_caps: Default::default(),
                expires_at_ms: *expires_at_ms,
            });
        }
    }
    h
}

impl CheckReport {
    /// Whether some checker found a safety violation, as opposed to only
    /// the harness's own trouble (a final read that failed, an unknown
    /// outcome no retry resolved). A fault build must be caught by the
    /// former.
    pub fn found_safety_violation(&self) -> bool {
        self.verdicts.iter().any(|v| {
            v.violations.iter().any(|x| {
                !(x.starts_with("final read on node")
                    || x.starts_with("no final state")
                    || x.starts_with("the final read reached no node")
                    || x.contains("never resolved by a retry"))
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod testkit;
