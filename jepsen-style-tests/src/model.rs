//! A sequential model of the ledger, written from the contract (not from the
//! `ledger` crate's code): sessions and budgets with caps, holds that are
//! captured, voided or expire by log time, idempotency keys.
//!
//! The checker replays `ok` operations in log order against it and compares
//! every result. Log time is known only within bounds for most entries, so
//! the model is evaluated at a given log time `t`: the caller tries each
//! time at which the outcome could differ.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::{hold_number, Pos, Request, Response, Setup};

/// Spent and held against one cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cap: u64,
    pub spent: u64,
    pub held: u64,
}

impl Usage {
    fn new(cap: u64) -> Usage {
        Usage { cap, spent: 0, held: 0 }
    }

    pub fn committed(&self) -> u64 {
        self.spent.saturating_add(self.held)
    }

    fn fits(&self, amount: u64) -> bool {
        self.committed().checked_add(amount).is_some_and(|t| t <= self.cap)
    }

    pub fn remaining(&self) -> u64 {
        self.cap.saturating_sub(self.committed())
    }

    fn hold(&mut self, amount: u64) {
        self.held = self.held.saturating_add(amount);
    }

    fn settle(&mut self, held: u64, captured: u64) {
        self.held = self.held.saturating_sub(held);
        self.spent = self.spent.saturating_add(captured);
    }
}

#[derive(Clone, Debug)]
struct MBudget {
    usage: Usage,
    tools: BTreeMap<String, Usage>,
    parent: Option<String>,
}

#[derive(Clone, Debug)]
struct MSession {
    usage: Usage,
    tools: BTreeMap<String, Usage>,
    budget: Option<String>,
    expires_at_ms: u64,
    revoked: bool,
}

/// The state of a hold in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldState {
    Held,
    Captured,
    Voided,
    Expired,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Held => "held",
            HoldState::Captured => "captured",
            HoldState::Voided => "voided",
            HoldState::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug)]
pub struct MHold {
    pub session: String,
    pub tool: String,
    pub amount: u64,
    pub expires_at_ms: u64,
    pub state: HoldState,
    pub captured: u64,
    pub key: String,
}

/// What the model says an operation must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A new hold of `amount`, leaving the session `remaining`.
    Approved {
        amount: u64,
        remaining: u64,
    },
    Denied {
        reason: &'static str,
        budget_id: Option<String>,
        remaining: Option<u64>,
    },
    Captured {
        captured: u64,
        released: u64,
    },
    Voided {
        released: u64,
    },
    /// The first result of this idempotency key again.
    Replay(Response),
    /// A refusal (an error answer), e.g. `already_captured`.
    Refused(&'static str),
    /// A change of a session or budget: any answer of its kind (its effect
    /// is applied by [`Model::apply`] or, for revocations, [`Model::revoke`]).
    Accept,
    Read {
        spent: u64,
        held: u64,
        remaining: u64,
        available: u64,
        status: &'static str,
    },
}

/// The model's state.
#[derive(Clone, Debug, Default)]
pub struct Model {
    budgets: BTreeMap<String, MBudget>,
    sessions: BTreeMap<String, MSession>,
    holds: BTreeMap<String, MHold>,
    /// Live holds by deadline.
    deadlines: BTreeSet<(u64, String)>,
    /// `(session, key)` of authorizations, `(authorization, key)` of
    /// captures and voids: the first result.
    keys: HashMap<(String, String), Response>,
    /// Log time up to which expiry has been applied.
    now_ms: u64,
    last_hold_number: Option<u64>,
}

impl Model {
    pub fn from_setup(setup: &Setup) -> Model {
        let mut m = Model::default();
        for b in &setup.budgets {
            m.budgets.insert(
                b.id.clone(),
                MBudget {
                    usage: Usage::new(b.cap),
                    tools: b.tool_caps.iter().map(|(t, c)| (t.clone(), Usage::new(*c))).collect(),
                    parent: b.parent.clone(),
                },
            );
        }
        for s in &setup.sessions {
            m.sessions.insert(
                s.id.clone(),
                MSession {
                    usage: Usage::new(s.cap),
                    tools: s.tool_caps.iter().map(|(t, c)| (t.clone(), Usage::new(*c))).collect(),
                    budget: s.budget.clone(),
                    expires_at_ms: s.expires_at_ms,
                    revoked: false,
                },
            );
        }
        m
    }

    #[cfg(test)]
    pub fn hold(&self, id: &str) -> Option<&MHold> {
        self.holds.get(id)
    }

    pub fn holds(&self) -> impl Iterator<Item = (&String, &MHold)> {
        self.holds.iter()
    }

    pub fn session_usage(&self, id: &str) -> Option<Usage> {
        self.sessions.get(id).map(|s| s.usage)
    }

    pub fn budget_usage(&self, id: &str) -> Option<Usage> {
        self.budgets.get(id).map(|b| b.usage)
    }

    /// Deadlines of live holds (and the session's expiry) in `(lo, hi]`:
    /// the log times at which an outcome could change.
    pub fn change_points(&self, lo: u64, hi: u64, session: Option<&str>) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .deadlines
            .range((lo.saturating_add(1), String::new())..)
            .map(|(d, _)| *d)
            .take_while(|d| *d <= hi)
            .collect();
        if let Some(s) = session.and_then(|s| self.sessions.get(s)) {
            if s.expires_at_ms > lo && s.expires_at_ms <= hi {
                out.push(s.expires_at_ms);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Log time reaches `t`: every hold whose deadline is `<= t` expires.
    pub fn advance(&mut self, t: u64) {
        if t <= self.now_ms {
            return;
        }
        self.now_ms = t;
        while let Some((deadline, _)) = self.deadlines.first() {
            if *deadline > t {
                break;
            }
            if let Some((_, id)) = self.deadlines.pop_first() {
                self.resolve(&id, HoldState::Expired, 0);
            }
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn chain(&self, start: &Option<String>) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = start.clone();
        while let Some(id) = next {
            let Some(b) = self.budgets.get(&id) else { break };
            next = b.parent.clone();
            out.push(id);
            if out.len() > 16 {
                break;
            }
        }
        out
    }

    /// Whether `request`'s idempotency key already has a first answer.
    pub fn knows_key(&self, request: &Request) -> bool {
        match request {
            Request::Authorize { session, key, .. } => self.keys.contains_key(&(session.clone(), key.clone())),
            Request::Capture { authorization, key, .. } | Request::Void { authorization, key, .. } => {
                self.keys.contains_key(&(authorization.clone(), key.clone()))
            }
            _ => false,
        }
    }

    /// What `request` must answer at log time `t` (after [`Model::advance`]
    /// to `t`).
    pub fn expect(&self, request: &Request, t: u64) -> Expected {
        match request {
            Request::Authorize {
                session,
                tool,
                amount,
                key,
                ..
            } => {
                let Some(s) = self.sessions.get(session) else {
                    return Expected::Denied {
                        reason: "unknown_session",
                        budget_id: None,
                        remaining: None,
                    };
                };
                if let Some(first) = self.keys.get(&(session.clone(), key.clone())) {
                    return Expected::Replay(first.clone());
                }
                if s.revoked {
                    return Expected::Denied {
                        reason: "session_revoked",
                        budget_id: None,
                        remaining: None,
                    };
                }
                if t >= s.expires_at_ms {
                    return Expected::Denied {
                        reason: "session_expired",
                        budget_id: None,
                        remaining: None,
                    };
                }
                if let Some(tc) = s.tools.get(tool) {
                    if !tc.fits(*amount) {
                        return Expected::Denied {
                            reason: "tool_cap",
                            budget_id: None,
                            remaining: Some(tc.remaining()),
                        };
                    }
                }
                if !s.usage.fits(*amount) {
                    return Expected::Denied {
                        reason: "session_cap",
                        budget_id: None,
                        remaining: Some(s.usage.remaining()),
                    };
                }
                for id in self.chain(&s.budget) {
                    let b = &self.budgets[&id];
                    if let Some(tc) = b.tools.get(tool) {
                        if !tc.fits(*amount) {
                            return Expected::Denied {
                                reason: "tool_cap",
                                budget_id: Some(id.clone()),
                                remaining: Some(tc.remaining()),
                            };
                        }
                    }
                    if !b.usage.fits(*amount) {
                        return Expected::Denied {
                            reason: "budget_cap",
                            budget_id: Some(id.clone()),
                            remaining: Some(b.usage.remaining()),
                        };
                    }
                }
                Expected::Approved {
                    amount: *amount,
                    remaining: s.usage.remaining().saturating_sub(*amount),
                }
            }
            Request::Capture {
                authorization,
                amount,
                key,
                ..
            } => {
                if let Some(first) = self.keys.get(&(authorization.clone(), key.clone())) {
                    return Expected::Replay(first.clone());
                }
                match self.live(authorization) {
                    Err(code) => Expected::Refused(code),
                    Ok(h) => {
                        let captured = amount.unwrap_or(h.amount);
                        if captured > h.amount {
                            return Expected::Refused("amount_exceeds_hold");
                        }
                        Expected::Captured {
                            captured,
                            released: h.amount - captured,
                        }
                    }
                }
            }
            Request::Void { authorization, key, .. } => {
                if let Some(first) = self.keys.get(&(authorization.clone(), key.clone())) {
                    return Expected::Replay(first.clone());
                }
                match self.live(authorization) {
                    Err(code) => Expected::Refused(code),
                    Ok(h) => Expected::Voided { released: h.amount },
                }
            }
            Request::Read { session } => match self.sessions.get(session) {
                None => Expected::Refused("not_found"),
                Some(s) => {
                    let mut available = s.usage.remaining();
                    for id in self.chain(&s.budget) {
                        available = available.min(self.budgets[&id].usage.remaining());
                    }
                    Expected::Read {
                        spent: s.usage.spent,
                        held: s.usage.held,
                        remaining: s.usage.remaining(),
                        available,
                        status: if s.revoked {
                            "revoked"
                        } else if t >= s.expires_at_ms {
                            "expired"
                        } else {
                            "active"
                        },
                    }
                }
            },
            Request::CreateSession { .. }
            | Request::Revoke { .. }
            | Request::RotateToken { .. }
            | Request::RaiseBudget { .. } => Expected::Accept,
        }
    }

    /// The session is revoked from here on (its holds stay as they are).
    pub fn revoke(&mut self, session: &str) {
        if let Some(s) = self.sessions.get_mut(session) {
            s.revoked = true;
        }
    }

    fn live(&self, authorization: &str) -> Result<&MHold, &'static str> {
        match self.holds.get(authorization) {
            None => Err("unknown_authorization"),
            Some(h) => match h.state {
                HoldState::Held => Ok(h),
                HoldState::Captured => Err("already_captured"),
                HoldState::Voided => Err("already_voided"),
                HoldState::Expired => Err("authorization_expired"),
            },
        }
    }

    /// Applies an answer the server gave (which [`matches`] accepted, or,
    /// after a mismatch, which the checker trusts so that one bad answer is
    /// reported once). Errors name structural impossibilities.
    pub fn apply(&mut self, request: &Request, response: &Response) -> Result<(), String> {
        match (request, response) {
            (
                Request::Authorize { session, tool, key, .. },
                Response::Decision {
                    approved: true,
                    authorization_id: Some(id),
                    amount: Some(amount),
                    expires_at_ms: Some(expires_at_ms),
                    ..
                },
            ) => {
                let scoped = (session.clone(), key.clone());
                if self.keys.contains_key(&scoped) {
                    return Ok(());
                }
                if self.holds.contains_key(id) {
                    return Err(format!("authorization id {id} handed out twice"));
                }
                if let Some(n) = hold_number(id) {
                    if let Some(last) = self.last_hold_number {
                        if n <= last {
                            return Err(format!(
                                "authorization id {id} is not greater than an earlier one in log order (au_{last})"
                            ));
                        }
                    }
                    self.last_hold_number = Some(n);
                }
                let mut first = response.clone();
                set_replayed(&mut first, false);
                self.keys.insert(scoped, first);
                let Some(s) = self.sessions.get_mut(session) else {
                    return Err(format!("approval for unknown session {session}"));
                };
                s.usage.hold(*amount);
                if let Some(tc) = s.tools.get_mut(tool) {
                    tc.hold(*amount);
                }
                let budget = s.budget.clone();
                for bid in self.chain(&budget) {
                    if let Some(b) = self.budgets.get_mut(&bid) {
                        b.usage.hold(*amount);
                        if let Some(tc) = b.tools.get_mut(tool) {
                            tc.hold(*amount);
                        }
                    }
                }
                self.holds.insert(
                    id.clone(),
                    MHold {
                        session: session.clone(),
                        tool: tool.clone(),
                        amount: *amount,
                        expires_at_ms: *expires_at_ms,
                        state: HoldState::Held,
                        captured: 0,
                        key: key.clone(),
                    },
                );
                if *expires_at_ms <= self.now_ms {
                    // Born expired: it cannot be, but keep the books straight.
                    self.resolve(id, HoldState::Expired, 0);
                } else {
                    self.deadlines.insert((*expires_at_ms, id.clone()));
                }
                Ok(())
            }
            (
                Request::Authorize { session, key, .. },
                Response::Decision {
                    approved: false,
                    reason: Some(reason),
                    ..
                },
            ) => {
                // A denial of a known session binds its key: later attempts
                // get it again (the ledger remembers it like an approval).
                if reason.as_str() != "unknown_session" && self.sessions.contains_key(session) {
                    let scoped = (session.clone(), key.clone());
                    if !self.keys.contains_key(&scoped) {
                        let mut first = response.clone();
                        set_replayed(&mut first, false);
                        self.keys.insert(scoped, first);
                    }
                }
                Ok(())
            }
            (Request::Authorize { .. }, Response::Decision { .. }) => Ok(()),
            (
                Request::Capture { authorization, key, .. },
                Response::Captured {
                    authorization_id,
                    captured,
                    ..
                },
            ) => {
                let scoped = (authorization.clone(), key.clone());
                if self.keys.contains_key(&scoped) {
                    return Ok(());
                }
                if authorization_id != authorization {
                    return Err(format!("capture of {authorization} answered for {authorization_id}"));
                }
                self.settle_live(authorization, HoldState::Captured, *captured)?;
                let mut first = response.clone();
                set_replayed(&mut first, false);
                self.keys.insert(scoped, first);
                Ok(())
            }
            (Request::Void { authorization, key, .. }, Response::Voided { authorization_id, .. }) => {
                let scoped = (authorization.clone(), key.clone());
                if self.keys.contains_key(&scoped) {
                    return Ok(());
                }
                if authorization_id != authorization {
                    return Err(format!("void of {authorization} answered for {authorization_id}"));
                }
                self.settle_live(authorization, HoldState::Voided, 0)?;
                let mut first = response.clone();
                set_replayed(&mut first, false);
                self.keys.insert(scoped, first);
                Ok(())
            }
            (Request::Read { .. }, Response::Read { .. }) => Ok(()),
            (Request::RaiseBudget { budget, cap, .. }, Response::BudgetUpdated { .. }) => {
                // Raises only: applied late (a float), an older raise must
                // not lower a newer one.
                let Some(b) = self.budgets.get_mut(budget) else {
                    return Err(format!("raise of unknown budget {budget}"));
                };
                b.usage.cap = b.usage.cap.max(*cap);
                Ok(())
            }
            (Request::CreateSession { .. }, Response::SessionCreated { .. })
            | (Request::Revoke { .. }, Response::Revoked { .. })
            | (Request::RotateToken { .. }, Response::TokenRotated { .. }) => Ok(()),
            (req, resp) => Err(format!("{} answered with {resp:?}", req.name())),
        }
    }

    /// [`Model::apply`] for an approval whose log position is known only
    /// roughly (its first attempt's outcome was unknown and a later replay
    /// showed it): hold ids need not grow at this point.
    pub fn apply_out_of_order(&mut self, request: &Request, response: &Response) -> Result<(), String> {
        let last = self.last_hold_number.take();
        let result = self.apply(request, response);
        self.last_hold_number = match (last, self.last_hold_number) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        result
    }

    /// [`Model::apply`] for a capture or void whose log position is known
    /// only roughly: when the model already expired the hold, the capture
    /// or void happened before its deadline instead.
    pub fn apply_late(&mut self, request: &Request, response: &Response) -> Result<(), String> {
        let (authorization, key, state, captured) = match (request, response) {
            (Request::Capture { authorization, key, .. }, Response::Captured { captured, .. }) => {
                (authorization, key, HoldState::Captured, *captured)
            }
            (Request::Void { authorization, key, .. }, Response::Voided { .. }) => {
                (authorization, key, HoldState::Voided, 0)
            }
            _ => return self.apply(request, response),
        };
        let expired = self
            .holds
            .get(authorization)
            .is_some_and(|h| h.state == HoldState::Expired);
        if !expired {
            return self.apply(request, response);
        }
        let scoped = (authorization.clone(), key.clone());
        if self.keys.contains_key(&scoped) {
            return Ok(());
        }
        // Expiry already released the hold; what remains is the captured
        // amount, spent.
        let (session, tool) = match self.holds.get_mut(authorization) {
            Some(h) => {
                h.state = state;
                h.captured = captured;
                (h.session.clone(), h.tool.clone())
            }
            None => return Err(format!("{authorization} is not a hold the history approved")),
        };
        if let Some(s) = self.sessions.get_mut(&session) {
            s.usage.settle(0, captured);
            if let Some(tc) = s.tools.get_mut(&tool) {
                tc.settle(0, captured);
            }
            let budget = s.budget.clone();
            for bid in self.chain(&budget) {
                if let Some(b) = self.budgets.get_mut(&bid) {
                    b.usage.settle(0, captured);
                    if let Some(tc) = b.tools.get_mut(&tool) {
                        tc.settle(0, captured);
                    }
                }
            }
        }
        let mut first = response.clone();
        set_replayed(&mut first, false);
        self.keys.insert(scoped, first);
        Ok(())
    }

    fn settle_live(&mut self, id: &str, state: HoldState, captured: u64) -> Result<(), String> {
        match self.holds.get(id) {
            None => Err(format!("{id} is not a hold the history approved")),
            Some(h) if h.state != HoldState::Held => Err(format!("{id} resolved again after {}", h.state.as_str())),
            Some(h) => {
                let deadline = h.expires_at_ms;
                self.deadlines.remove(&(deadline, id.to_string()));
                self.resolve(id, state, captured);
                Ok(())
            }
        }
    }

    fn resolve(&mut self, id: &str, state: HoldState, captured: u64) {
        let Some(h) = self.holds.get_mut(id) else { return };
        h.state = state;
        h.captured = captured;
        let (session, tool, amount) = (h.session.clone(), h.tool.clone(), h.amount);
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.usage.settle(amount, captured);
        if let Some(tc) = s.tools.get_mut(&tool) {
            tc.settle(amount, captured);
        }
        let budget = s.budget.clone();
        for bid in self.chain(&budget) {
            if let Some(b) = self.budgets.get_mut(&bid) {
                b.usage.settle(amount, captured);
                if let Some(tc) = b.tools.get_mut(&tool) {
                    tc.settle(amount, captured);
                }
            }
        }
    }
}

/// A first answer as a replay must repeat it: everything but the `replayed`
/// flag and the log position (a replay may be decided at its own position).
fn normalized(r: &Response) -> Response {
    let mut r = r.clone();
    set_replayed(&mut r, false);
    match &mut r {
        Response::Decision { pos, .. } | Response::Captured { pos, .. } | Response::Voided { pos, .. } => {
            *pos = Pos::new(0, 0)
        }
        _ => {}
    }
    r
}

fn set_replayed(r: &mut Response, value: bool) {
    match r {
        Response::Decision { replayed, .. }
        | Response::Captured { replayed, .. }
        | Response::Voided { replayed, .. } => *replayed = value,
        _ => {}
    }
}

/// Compares an answer with the model's expectation; `Err` says how they
/// differ. The `replayed` flag is not compared (a replay sits at its first
/// result's log position, and may be the only answer seen for it).
pub fn matches(expected: &Expected, actual: &Response) -> Result<(), String> {
    match (expected, actual) {
        (
            Expected::Approved { amount, remaining },
            Response::Decision {
                approved: true,
                amount: a,
                remaining: r,
                authorization_id,
                ..
            },
        ) => {
            if authorization_id.is_none() {
                return Err("approved without an authorization id".into());
            }
            if *a != Some(*amount) {
                return Err(format!("approved amount {a:?}, expected {amount}"));
            }
            if *r != Some(*remaining) {
                return Err(format!("approved leaving {r:?}, model leaves {remaining}"));
            }
            Ok(())
        }
        (
            Expected::Denied {
                reason,
                budget_id,
                remaining,
            },
            Response::Decision {
                approved: false,
                reason: r,
                budget_id: b,
                remaining: rem,
                authorization_id,
                ..
            },
        ) => {
            if authorization_id.is_some() {
                return Err("denied but carries an authorization id".into());
            }
            if r.as_deref() != Some(*reason) {
                return Err(format!("denied for {r:?}, model denies for {reason}"));
            }
            if b != budget_id {
                return Err(format!("denied by budget {b:?}, model by {budget_id:?}"));
            }
            if let (Some(x), Some(y)) = (rem, remaining) {
                if x != y {
                    return Err(format!("denial says {x} left, model has {y}"));
                }
            }
            Ok(())
        }
        (
            Expected::Captured { captured, released },
            Response::Captured {
                captured: c,
                released: r,
                ..
            },
        ) => {
            if (c, r) != (captured, released) {
                return Err(format!(
                    "captured {c} released {r}, model captures {captured} releases {released}"
                ));
            }
            Ok(())
        }
        (Expected::Voided { released }, Response::Voided { released: r, .. }) => {
            if r != released {
                return Err(format!("void released {r}, model releases {released}"));
            }
            Ok(())
        }
        (Expected::Replay(first), actual) => {
            if normalized(actual) != normalized(first) {
                return Err(format!(
                    "retry of a key answered {actual:?}, first answer was {first:?}"
                ));
            }
            Ok(())
        }
        (
            Expected::Read {
                spent,
                held,
                remaining,
                available,
                status,
            },
            Response::Read {
                spent: s,
                held: h,
                remaining: r,
                available: a,
                status: st,
                ..
            },
        ) => {
            if (s, h, r, a, st.as_str()) != (spent, held, remaining, available, *status) {
                return Err(format!(
                    "read spent {s} held {h} remaining {r} available {a} {st}; model: spent {spent} held {held} remaining {remaining} available {available} {status}"
                ));
            }
            Ok(())
        }
        (Expected::Accept, actual) if actual.is_admin() => Ok(()),
        (expected, actual) => Err(format!("answered {actual:?}, model expects {expected:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{SessionSpec, Workload, DOLLAR};

    fn setup() -> Setup {
        Setup {
            budgets: vec![],
            sessions: vec![SessionSpec {
                id: "s".into(),
                workload: Workload::Seed,
                cap: 25 * DOLLAR,
                budget: None,
                tool_caps: BTreeMap::new(),
                expires_at_ms: 1_000_000,
            }],
            start_wall_ms: 0,
        }
    }

    fn auth(key: &str, amount: u64, seconds: u64) -> Request {
        Request::Authorize {
            session: "s".into(),
            tool: "t".into(),
            amount,
            key: key.into(),
            hold_seconds: seconds,
            token: None,
        }
    }

    fn approved(id: &str, amount: u64, remaining: u64, expires: u64) -> Response {
        Response::Decision {
            approved: true,
            reason: None,
            budget_id: None,
            authorization_id: Some(id.into()),
            amount: Some(amount),
            remaining: Some(remaining),
            expires_at_ms: Some(expires),
            replayed: false,
            pos: Pos::new(1, 0),
        }
    }

    #[test]
    fn two_tens_fit_a_25_cap_and_a_third_does_not() {
        let mut m = Model::from_setup(&setup());
        for (i, left) in [(0u64, 15u64), (1, 5)] {
            let r = auth(&format!("k{i}"), 10 * DOLLAR, 60);
            let e = m.expect(&r, 100);
            let resp = approved(&format!("au_{i}"), 10 * DOLLAR, left * DOLLAR, 60_100);
            matches(&e, &resp).expect("approved");
            m.apply(&r, &resp).expect("apply");
        }
        assert_eq!(
            m.expect(&auth("k2", 10 * DOLLAR, 60), 100),
            Expected::Denied {
                reason: "session_cap",
                budget_id: None,
                remaining: Some(5 * DOLLAR)
            }
        );
        // The first key again: its first answer.
        assert!(matches!(
            m.expect(&auth("k0", 10 * DOLLAR, 60), 100),
            Expected::Replay(_)
        ));
        // After the deadline the holds are gone.
        m.advance(60_100);
        assert_eq!(m.session_usage("s").map(|u| u.held), Some(0));
        assert_eq!(m.hold("au_0").map(|h| h.state), Some(HoldState::Expired));
    }

    #[test]
    fn capture_moves_to_spent_and_releases_the_rest() {
        let mut m = Model::from_setup(&setup());
        let r = auth("k", 10 * DOLLAR, 60);
        m.apply(&r, &approved("au_0", 10 * DOLLAR, 15 * DOLLAR, 60_000))
            .expect("apply");
        let c = Request::Capture {
            authorization: "au_0".into(),
            session: "s".into(),
            amount: Some(4 * DOLLAR),
            key: "c".into(),
        };
        assert_eq!(
            m.expect(&c, 10),
            Expected::Captured {
                captured: 4 * DOLLAR,
                released: 6 * DOLLAR
            }
        );
        m.apply(
            &c,
            &Response::Captured {
                authorization_id: "au_0".into(),
                captured: 4 * DOLLAR,
                released: 6 * DOLLAR,
                replayed: false,
                pos: Pos::new(2, 0),
            },
        )
        .expect("apply");
        let u = m.session_usage("s").expect("session");
        assert_eq!((u.spent, u.held), (4 * DOLLAR, 0));
        let v = Request::Void {
            authorization: "au_0".into(),
            session: "s".into(),
            key: "v".into(),
        };
        assert_eq!(m.expect(&v, 10), Expected::Refused("already_captured"));
        assert!(m.change_points(0, 100_000, Some("s")).is_empty());
    }

    #[test]
    fn hold_ids_must_grow_in_log_order() {
        let mut m = Model::from_setup(&setup());
        m.apply(&auth("a", DOLLAR, 60), &approved("au_5", DOLLAR, 24 * DOLLAR, 60_000))
            .expect("apply");
        let err = m
            .apply(&auth("b", DOLLAR, 60), &approved("au_3", DOLLAR, 23 * DOLLAR, 60_000))
            .expect_err("must refuse");
        assert!(err.contains("not greater"), "{err}");
    }
}
