//! API requests as ledger values: ids from paths, amounts, assets, tool
//! sets, page limits, query filters, and the commands built from them.
//! Everything here is checked without the state (a caller passes what it
//! knows of the state, such as a session's asset, as an argument).

use std::collections::{BTreeMap, BTreeSet};

use api::{PAGE_ITEMS_DEFAULT, PAGE_ITEMS_MAX};
use ledger::amount::{parse_atomic, parse_decimal, parse_positive};
use ledger::{
    Amount, AmountInput, Asset, AssetCode, Authorize, BudgetId, Command, DecisionContext, HoldId, IdempotencyKey,
    ReceiptId, SessionId, TokenHash, Tool,
};
use storage::ReceiptFilter;

use super::error::{ApiError, ApiResult};
use super::extract::Principal;

// ---- ids ------------------------------------------------------------------

/// A budget id from a path: one that cannot exist is not found.
pub fn budget_id(text: &str) -> ApiResult<BudgetId> {
    BudgetId::new(text).map_err(|_| ApiError::not_found("unknown_budget", format!("no budget {text:?}")))
}

/// A session id from a path.
pub fn session_id(text: &str) -> ApiResult<SessionId> {
    SessionId::new(text).map_err(|_| ApiError::not_found("unknown_session", format!("no session {text:?}")))
}

/// An authorization id from a path.
pub fn hold_id(text: &str) -> ApiResult<HoldId> {
    text.parse()
        .map_err(|_| ApiError::not_found("unknown_authorization", format!("no authorization {text:?}")))
}

/// A receipt id from a path.
pub fn receipt_id(text: &str) -> ApiResult<ReceiptId> {
    text.parse()
        .map_err(|_| ApiError::not_found("unknown_receipt", format!("no receipt {text:?}")))
}

/// A budget id given in a body or query `field`.
pub fn budget_id_field(field: &str, text: String) -> ApiResult<BudgetId> {
    BudgetId::new(text).map_err(|e| ApiError::field(field, e))
}

/// A session id given in a body or query `field`.
pub fn session_id_field(field: &str, text: String) -> ApiResult<SessionId> {
    SessionId::new(text).map_err(|e| ApiError::field(field, e))
}

pub fn idempotency_key(key: Option<String>) -> ApiResult<Option<IdempotencyKey>> {
    key.map(|k| IdempotencyKey::new(k).map_err(|e| ApiError::field("idempotency_key", e)))
        .transpose()
}

// ---- pages ----------------------------------------------------------------

/// A page size: the default when absent, else between 1 and the maximum.
pub fn page_limit(limit: Option<u32>) -> ApiResult<usize> {
    match limit {
        None => Ok(PAGE_ITEMS_DEFAULT as usize),
        Some(0) => Err(ApiError::field("limit", "must be at least 1")),
        Some(n) if n > PAGE_ITEMS_MAX => Err(ApiError::field("limit", format!("at most {PAGE_ITEMS_MAX}"))),
        Some(n) => Ok(n as usize),
    }
}

/// `GET /v1/authorizations?status=settling`: holds with a payment possibly
/// in flight, for reconciliation (admin).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationQuery {
    pub status: String,
    /// An authorization id: start after it.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// The receipts a principal asks for: a session token reads only its own,
/// the gateway none.
pub fn receipt_filter(principal: &Principal, q: api::ReceiptQuery) -> ApiResult<ReceiptFilter> {
    let session_id = match principal {
        Principal::Admin => q.session_id,
        Principal::Session(own, _) => match q.session_id {
            Some(other) if other != own.as_str() => {
                return Err(ApiError::Forbidden(
                    "a session token may read only its own receipts".into(),
                ))
            }
            _ => Some(own.to_string()),
        },
        Principal::Gateway => return Err(ApiError::Forbidden("the gateway token cannot read receipts".into())),
    };
    let after = q
        .after
        .map(|a| a.parse::<ReceiptId>().map_err(|e| ApiError::field("after", e)))
        .transpose()?;
    Ok(ReceiptFilter {
        session_id,
        agent_id: q.agent_id,
        tool: q.tool,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        after,
        limit: page_limit(q.limit)?,
    })
}

// ---- money, assets, tools --------------------------------------------------

/// The asset a request names: USDC with 6 decimals by default; other assets
/// must state their decimals.
pub fn asset_input(code: Option<String>, decimals: Option<u8>) -> ApiResult<Asset> {
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
pub fn cap_input(field: &str, text: &str, asset: &Asset) -> ApiResult<Amount> {
    parse_positive(text, asset.decimals).map_err(|e| ApiError::InvalidAmount(format!("{field}: {e}")))
}

pub fn tool_caps_input(caps: BTreeMap<String, String>, asset: &Asset) -> ApiResult<BTreeMap<Tool, Amount>> {
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

/// A set of tool names (a session's allowlist, a budget's blocked tools),
/// at most [`ledger::TOOL_SET_MAX`].
pub fn tool_set_input(field: &str, tools: BTreeSet<String>) -> ApiResult<BTreeSet<Tool>> {
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
pub fn amount_input(amount: Option<String>, atomic: Option<String>) -> ApiResult<Option<AmountInput>> {
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
pub fn check_against(input: &AmountInput, asset: &Asset) -> ApiResult<()> {
    match input {
        AmountInput::Decimal(text) => parse_decimal(text, asset.decimals)
            .map(|_| ())
            .map_err(|e| ApiError::InvalidAmount(format!("amount: {e}"))),
        AmountInput::Atomic(_) => Ok(()),
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

// ---- commands -------------------------------------------------------------

/// The fields of one authorization request (`POST
/// /v1/sessions/{id}/authorizations`, or one item of a batch).
pub struct AuthorizeFields {
    pub amount: Option<String>,
    pub amount_atomic: Option<String>,
    pub tool: String,
    pub idempotency_key: Option<String>,
    pub hold_seconds: Option<u64>,
    pub context: Option<api::DecisionContext>,
}

impl From<api::AuthorizeRequest> for AuthorizeFields {
    fn from(r: api::AuthorizeRequest) -> Self {
        AuthorizeFields {
            amount: r.amount,
            amount_atomic: r.amount_atomic,
            tool: r.tool,
            idempotency_key: r.idempotency_key,
            hold_seconds: r.hold_seconds,
            context: r.context,
        }
    }
}

impl AuthorizeFields {
    /// A batch item: its session id (as given) and its fields.
    pub fn from_batch_item(i: api::BatchAuthorizeItem) -> (String, Self) {
        let fields = AuthorizeFields {
            amount: i.amount,
            amount_atomic: i.amount_atomic,
            tool: i.tool,
            idempotency_key: i.idempotency_key,
            hold_seconds: i.hold_seconds,
            context: i.context,
        };
        (i.session_id, fields)
    }
}

/// Builds and checks an authorize command. `asset` is the session's when
/// this node knows the session: it refuses a too-precise amount here,
/// without a trip through the log. `credential` is the hash of the session
/// token the request came with (`None` for the admin).
pub fn authorize_command(
    session: SessionId,
    fields: AuthorizeFields,
    asset: Option<&Asset>,
    credential: Option<TokenHash>,
) -> ApiResult<Command> {
    let amount = amount_input(fields.amount, fields.amount_atomic)?
        .ok_or_else(|| ApiError::field("amount", "amount or amount_atomic is required"))?;
    if let Some(asset) = asset {
        check_against(&amount, asset)?;
    }
    let command = Command::Authorize(Authorize {
        session_id: session,
        amount,
        tool: Tool::new(fields.tool).map_err(|e| ApiError::field("tool", e))?,
        idempotency_key: idempotency_key(fields.idempotency_key)?,
        hold_ttl_ms: fields.hold_seconds.map(|h| h.saturating_mul(1000)),
        context: context_input(fields.context),
        credential,
    });
    command.validate().map_err(|e| ApiError::field(e.field, e.message))?;
    Ok(command)
}
