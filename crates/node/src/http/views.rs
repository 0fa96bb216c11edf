//! What the API answers: ledger records and outcomes as API views (amounts
//! formatted in their asset), decisions, log positions and pages.

use std::collections::{BTreeMap, BTreeSet};

use api::{AuthorizationView, BudgetView, CapView, Decision, LogPosition, Page, ReceiptView, SessionView};
use ledger::{Amount, Asset, Budget, CapUsage, DecisionContext, DenyReason, Hold, Outcome, Receipt, SessionId, Tool};

use super::error::{refusal, ApiError};
use crate::node_reads::SessionRead;
use crate::proposer::Decided;

pub fn money(a: Amount, asset: &Asset) -> String {
    a.to_decimal_string(asset.decimals)
}

fn cap_view(c: &CapUsage, asset: &Asset) -> CapView {
    CapView {
        cap: money(c.cap, asset),
        spent: money(c.usage.spent, asset),
        held: money(c.usage.held, asset),
        remaining: money(c.remaining(), asset),
    }
}

fn tool_caps_view(caps: &BTreeMap<Tool, CapUsage>, asset: &Asset) -> BTreeMap<String, CapView> {
    caps.iter().map(|(t, c)| (t.to_string(), cap_view(c, asset))).collect()
}

pub fn budget_view(b: &Budget) -> BudgetView {
    let CapView {
        cap,
        spent,
        held,
        remaining,
    } = cap_view(&b.limit, &b.asset);
    BudgetView {
        id: b.id.to_string(),
        asset: b.asset.code.to_string(),
        decimals: b.asset.decimals,
        cap,
        spent,
        held,
        remaining,
        tool_caps: tool_caps_view(&b.tool_caps, &b.asset),
        parent: b.parent.as_ref().map(|p| p.to_string()),
        created_at_ms: b.created_at_ms,
        blocked_tools: tool_names(&b.blocked_tools),
    }
}

/// A session as read at `read_index` (the index the read waited for, or
/// the index of the write that changed it).
pub fn session_view(read: &SessionRead, read_index: u64) -> SessionView {
    let s = &read.session;
    let CapView {
        cap,
        spent,
        held,
        remaining,
    } = cap_view(&s.limit, &s.asset);
    SessionView {
        id: s.id.to_string(),
        asset: s.asset.code.to_string(),
        decimals: s.asset.decimals,
        cap,
        spent,
        held,
        remaining,
        available: money(read.available, &s.asset),
        tool_caps: tool_caps_view(&s.tool_caps, &s.asset),
        budget: s.budget.as_ref().map(|b| b.to_string()),
        tools: s.tools.as_ref().map(tool_names),
        live_holds_max: s.live_holds_max,
        live_holds: read.live_holds,
        agent_id: s.agent_id.clone(),
        wallet_address: s.wallet_address.clone(),
        created_at_ms: s.created_at_ms,
        expires_at_ms: s.expires_at_ms,
        status: read.status.as_str().to_string(),
        read_index,
    }
}

pub fn context_view(c: &DecisionContext) -> api::DecisionContext {
    api::DecisionContext {
        trace_id: c.trace_id.clone(),
        tool_call_id: c.tool_call_id.clone(),
        note: c.note.clone(),
    }
}

pub fn hold_view(h: &Hold, asset: &Asset) -> AuthorizationView {
    let fmt = |a: Amount| money(a, asset);
    AuthorizationView {
        id: h.id.to_string(),
        session_id: h.session_id.to_string(),
        tool: h.tool.to_string(),
        amount: fmt(h.amount),
        status: h.status.as_str().to_string(),
        captured: fmt(h.captured),
        created_at_ms: h.created_at_ms,
        expires_at_ms: h.expires_at_ms,
        resolved_at_ms: h.resolved_at_ms,
        receipt_id: h.receipt_id.map(|r| r.to_string()),
        idempotency_key: h.idempotency_key.as_ref().map(|k| k.to_string()),
        context: context_view(&h.context),
        settling_since_ms: h.settling.as_ref().map(|x| x.since_ms),
        settling_reference: h.settling.as_ref().map(|x| x.reference.clone()),
    }
}

pub fn receipt_view(r: &Receipt) -> ReceiptView {
    ReceiptView {
        id: r.id.to_string(),
        authorization_id: r.hold_id.to_string(),
        session_id: r.session_id.to_string(),
        agent_id: r.agent_id.clone(),
        tool: r.tool.to_string(),
        amount: money(r.amount, &r.asset),
        amount_atomic: r.amount.to_string(),
        asset: r.asset.code.to_string(),
        decimals: r.asset.decimals,
        wallet_address: r.wallet_address.clone(),
        payment_request_id: r.payment_request_id.clone(),
        signature: r.signature.clone(),
        transaction_hash: r.transaction_hash.clone(),
        network: r.network.clone(),
        resource_url: r.resource_url.clone(),
        timestamp_ms: r.timestamp_ms,
        context: context_view(&r.context),
        previous_history_hash: hex::encode(r.previous_history_hash),
    }
}

fn tool_names(tools: &BTreeSet<Tool>) -> BTreeSet<String> {
    tools.iter().map(|t| t.to_string()).collect()
}

/// Where a decided command sits in the log (see [`Decided::position`]).
pub fn position(d: &Decided) -> LogPosition {
    let p = d.position();
    LogPosition {
        log_index: p.log_index,
        batch_position: p.batch_position,
        log_time_ms: p.time_ms,
    }
}

/// One page of a listing that asked for at most `limit` items: when it is
/// full, `next_after` is the key of its last item (the caller continues
/// after it); a shorter page is the last.
pub fn page<T>(items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next_after = if items.len() == limit {
        items.last().map(key)
    } else {
        None
    };
    Page { items, next_after }
}

/// An authorization's decision as the API shows it, from the outcome alone
/// (it carries the session's asset); an error for a refusal.
pub fn decision_view(session: &SessionId, d: &Decided) -> Result<Decision, ApiError> {
    let mut out = Decision {
        decision: String::new(),
        session_id: session.to_string(),
        authorization_id: None,
        amount: None,
        expires_at_ms: None,
        reason: None,
        budget_id: None,
        tool: None,
        remaining: None,
        message: None,
        replayed: false,
        position: position(d),
    };
    match &d.outcome {
        Outcome::Approved { approval, replayed } => {
            out.decision = "approved".into();
            out.authorization_id = Some(approval.hold_id.to_string());
            out.amount = Some(money(approval.amount, &approval.asset));
            out.expires_at_ms = Some(approval.expires_at_ms);
            out.remaining = Some(money(approval.session_remaining, &approval.asset));
            out.replayed = *replayed;
        }
        Outcome::Denied(reason) => {
            out.decision = "denied".into();
            out.reason = Some(reason.code().into());
            // Only the reasons that are caps name an amount (and its asset);
            // an unknown session has neither.
            let (remaining, message) = match reason {
                DenyReason::SessionCap { remaining, asset } => (
                    Some(money(*remaining, asset)),
                    "the session's cap would be exceeded".to_string(),
                ),
                DenyReason::ToolCap {
                    tool,
                    budget_id,
                    remaining,
                    asset,
                } => {
                    out.tool = Some(tool.to_string());
                    out.budget_id = budget_id.as_ref().map(|b| b.to_string());
                    (
                        Some(money(*remaining, asset)),
                        format!("the cap on tool {tool} would be exceeded"),
                    )
                }
                DenyReason::BudgetCap {
                    budget_id,
                    remaining,
                    asset,
                } => {
                    out.budget_id = Some(budget_id.to_string());
                    (
                        Some(money(*remaining, asset)),
                        format!("budget {budget_id} would be exceeded"),
                    )
                }
                DenyReason::SessionExpired => (None, "the session has expired".into()),
                DenyReason::SessionRevoked => (None, "the session was revoked".into()),
                DenyReason::UnknownSession => (None, "no such session".into()),
                DenyReason::ToolNotAllowed => (None, "the session's tool allowlist does not include this tool".into()),
                DenyReason::ToolBlocked { budget_id } => {
                    out.budget_id = Some(budget_id.to_string());
                    (None, format!("budget {budget_id} blocks this tool"))
                }
                DenyReason::TooManyHolds { limit } => (
                    None,
                    format!("the session has {limit} live authorizations, its limit: capture or void some first"),
                ),
            };
            out.remaining = remaining;
            out.message = Some(message);
        }
        Outcome::Refused(r) => return Err(refusal(r.clone(), None)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use ledger::{Approval, AssetCode, BudgetId, HoldId, Position};

    use super::*;

    fn decided(outcome: Outcome) -> Decided {
        Decided {
            outcome,
            log_index: 9,
            batch_position: 1,
            time_ms: 5,
        }
    }

    fn cents() -> Asset {
        Asset {
            code: AssetCode::new("EURC").expect("valid code"),
            decimals: 2,
        }
    }

    #[test]
    fn a_full_page_points_past_its_last_item_and_a_short_one_ends() {
        let full = page(vec!["a", "b"], 2, |s| s.to_string());
        assert_eq!(full.next_after.as_deref(), Some("b"));
        let short = page(vec!["a"], 2, |s| s.to_string());
        assert_eq!(short.next_after, None);
        let empty = page(Vec::<&str>::new(), 2, |s| s.to_string());
        assert_eq!(empty.next_after, None);
    }

    #[test]
    fn an_approval_is_formatted_in_the_asset_it_carries() {
        let at = Position {
            log_index: 3,
            batch_position: 2,
            time_ms: 4,
        };
        let d = decided(Outcome::Approved {
            approval: Approval {
                at,
                hold_id: HoldId(7),
                amount: Amount(150),
                asset: cents(),
                session_remaining: Amount(1_000),
                expires_at_ms: 99,
            },
            replayed: true,
        });
        let v = decision_view(&SessionId::new("s1").expect("valid id"), &d).expect("a decision");
        assert_eq!(v.decision, "approved");
        assert_eq!(v.amount.as_deref(), Some("1.50"));
        assert_eq!(v.remaining.as_deref(), Some("10.00"));
        assert!(v.replayed);
        // A replay keeps the first decision's position.
        assert_eq!((v.position.log_index, v.position.batch_position), (3, 2));
    }

    #[test]
    fn a_cap_denial_is_formatted_in_its_asset_and_an_unknown_session_needs_none() {
        let d = decided(Outcome::Denied(DenyReason::BudgetCap {
            budget_id: BudgetId::new("team").expect("valid id"),
            remaining: Amount(5),
            asset: cents(),
        }));
        let v = decision_view(&SessionId::new("s1").expect("valid id"), &d).expect("a decision");
        assert_eq!(
            (v.decision.as_str(), v.reason.as_deref(), v.budget_id.as_deref()),
            ("denied", Some("budget_cap"), Some("team"))
        );
        assert_eq!(v.remaining.as_deref(), Some("0.05"));
        assert_eq!((v.position.log_index, v.position.batch_position), (9, 1));

        let d = decided(Outcome::Denied(DenyReason::UnknownSession));
        let v = decision_view(&SessionId::new("s2").expect("valid id"), &d).expect("a decision");
        assert_eq!(v.reason.as_deref(), Some("unknown_session"));
        assert_eq!((v.amount, v.remaining), (None, None));
    }

    #[test]
    fn a_refusal_is_an_error_not_a_decision() {
        let d = decided(Outcome::Refused(ledger::Refusal::TokenSuperseded));
        let e = decision_view(&SessionId::new("s1").expect("valid id"), &d).expect_err("a refusal");
        assert_eq!(e.code(), "token_superseded");
    }
}
