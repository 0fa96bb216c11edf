//! Ledger records as API views, and API requests as ledger commands.

use std::collections::{BTreeMap, BTreeSet};

use api::{AuthorizationView, BudgetView, CapView, ReceiptView, SessionView};
use ledger::amount::{parse_atomic, parse_decimal, parse_positive};
use ledger::{
    Amount, AmountInput, Asset, AssetCode, Budget, CapUsage, DecisionContext, Hold, Ledger, Receipt, Session, Tool,
};

use super::error::ApiError;

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
    BudgetView {
        id: b.id.to_string(),
        asset: b.asset.code.to_string(),
        decimals: b.asset.decimals,
        cap: money(b.limit.cap, &b.asset),
        spent: money(b.limit.usage.spent, &b.asset),
        held: money(b.limit.usage.held, &b.asset),
        remaining: money(b.limit.remaining(), &b.asset),
        tool_caps: tool_caps_view(&b.tool_caps, &b.asset),
        parent: b.parent.as_ref().map(|p| p.to_string()),
        created_at_ms: b.created_at_ms,
        blocked_tools: tool_names(&b.blocked_tools),
    }
}

pub fn session_view(ledger: &Ledger, s: &Session, read_index: u64) -> SessionView {
    let status = if s.revoked {
        "revoked"
    } else if ledger.now_ms() >= s.expires_at_ms {
        "expired"
    } else {
        "active"
    };
    SessionView {
        id: s.id.to_string(),
        asset: s.asset.code.to_string(),
        decimals: s.asset.decimals,
        cap: money(s.limit.cap, &s.asset),
        spent: money(s.limit.usage.spent, &s.asset),
        held: money(s.limit.usage.held, &s.asset),
        remaining: money(s.limit.remaining(), &s.asset),
        available: money(ledger.available(s, None), &s.asset),
        tool_caps: tool_caps_view(&s.tool_caps, &s.asset),
        budget: s.budget.as_ref().map(|b| b.to_string()),
        tools: s.tools.as_ref().map(tool_names),
        live_holds_max: s.live_holds_max,
        live_holds: ledger.live_holds_of(&s.id),
        agent_id: s.agent_id.clone(),
        wallet_address: s.wallet_address.clone(),
        created_at_ms: s.created_at_ms,
        expires_at_ms: s.expires_at_ms,
        status: status.to_string(),
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

pub fn context_input(c: Option<api::DecisionContext>) -> DecisionContext {
    let c = c.unwrap_or_default();
    DecisionContext {
        trace_id: c.trace_id,
        tool_call_id: c.tool_call_id,
        note: c.note,
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

/// The asset a request names: USDC with 6 decimals by default; other assets
/// must state their decimals.
pub fn asset_input(code: Option<String>, decimals: Option<u8>) -> Result<Asset, ApiError> {
    let code = code.unwrap_or_else(|| "USDC".to_string());
    let decimals = match (code.as_str(), decimals) {
        (_, Some(d)) => d,
        ("USDC", None) => 6,
        (_, None) => return Err(ApiError::field("decimals", "required for assets other than USDC")),
    };
    if decimals > ledger::amount::ASSET_DECIMALS_MAX {
        return Err(ApiError::field(
            "decimals",
            format!("at most {}", ledger::amount::ASSET_DECIMALS_MAX),
        ));
    }
    if code == "USDC" && decimals != 6 {
        return Err(ApiError::field("decimals", "USDC has 6 decimals"));
    }
    let code = AssetCode::new(code).map_err(|e| ApiError::field("asset", e))?;
    Ok(Asset { code, decimals })
}

/// A positive cap in the asset's unit.
pub fn cap_input(field: &str, text: &str, asset: &Asset) -> Result<Amount, ApiError> {
    parse_positive(text, asset.decimals).map_err(|e| ApiError::InvalidAmount(format!("{field}: {e}")))
}

pub fn tool_caps_input(caps: BTreeMap<String, String>, asset: &Asset) -> Result<BTreeMap<Tool, Amount>, ApiError> {
    if caps.len() > ledger::TOOL_CAPS_MAX {
        return Err(ApiError::field(
            "tool_caps",
            format!("at most {} per-tool caps", ledger::TOOL_CAPS_MAX),
        ));
    }
    caps.into_iter()
        .map(|(t, c)| {
            let tool = Tool::new(t).map_err(|e| ApiError::field("tool_caps", e))?;
            let cap = cap_input(&format!("tool_caps.{tool}"), &c, asset)?;
            Ok((tool, cap))
        })
        .collect()
}

fn tool_names(tools: &BTreeSet<Tool>) -> BTreeSet<String> {
    tools.iter().map(|t| t.to_string()).collect()
}

/// A set of tool names (a session's allowlist, a budget's blocked tools),
/// at most [`ledger::TOOL_SET_MAX`].
pub fn tool_set_input(field: &str, tools: BTreeSet<String>) -> Result<BTreeSet<Tool>, ApiError> {
    if tools.len() > ledger::TOOL_SET_MAX {
        return Err(ApiError::field(
            field,
            format!("at most {} tools", ledger::TOOL_SET_MAX),
        ));
    }
    tools
        .into_iter()
        .map(|t| Tool::new(t).map_err(|e| ApiError::field(field, e)))
        .collect()
}

/// An amount given as `amount` (decimal) or `amount_atomic` (integer), not
/// both. Syntax is checked here; the decimals against the session's asset
/// are checked by the ledger.
pub fn amount_input(amount: Option<String>, atomic: Option<String>) -> Result<Option<AmountInput>, ApiError> {
    match (amount, atomic) {
        (Some(_), Some(_)) => Err(ApiError::field("amount", "give amount or amount_atomic, not both")),
        (Some(text), None) => {
            let input = AmountInput::Decimal(text);
            input
                .check_syntax()
                .map_err(|e| ApiError::InvalidAmount(format!("amount: {e}")))?;
            Ok(Some(input))
        }
        (None, Some(text)) => {
            let a = parse_atomic(&text).map_err(|e| ApiError::InvalidAmount(format!("amount_atomic: {e}")))?;
            if a.is_zero() {
                return Err(ApiError::InvalidAmount(
                    "amount_atomic: amount must be greater than zero".into(),
                ));
            }
            Ok(Some(AmountInput::Atomic(a)))
        }
        (None, None) => Ok(None),
    }
}

/// Resolves an amount against a known asset, for a fast local check.
pub fn check_against(input: &AmountInput, asset: &Asset) -> Result<(), ApiError> {
    match input {
        AmountInput::Decimal(text) => parse_decimal(text, asset.decimals)
            .map(|_| ())
            .map_err(|e| ApiError::InvalidAmount(format!("amount: {e}"))),
        AmountInput::Atomic(_) => Ok(()),
    }
}
