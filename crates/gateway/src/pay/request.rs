//! The fetch request: validated, and its agent authenticated (steps 1
//! and 2); how ledger failures read to the agent.

use crate::error::{Code, GatewayError, GatewayResult};
use crate::ledger::{Ledger, LedgerFailure};
use crate::shared::Shared;
use crate::tools::{derive_tool, TOOL_BYTES_MAX};
use crate::upstream::{self, UpstreamRequest};
use crate::wire::FetchRequest;

/// Session tokens start with this (admin tokens are not accepted: an agent
/// acts only as its session).
const SESSION_TOKEN_PREFIX: &str = api::SESSION_TOKEN_PREFIX;
/// Longest agent idempotency key.
const AGENT_KEY_BYTES_MAX: usize = 128;

pub(super) struct Session {
    pub(super) id: String,
    pub(super) asset: String,
    pub(super) decimals: u8,
    pub(super) wallet: Option<String>,
}

/// A validated fetch.
pub(super) struct Fetch {
    pub(super) upstream: UpstreamRequest,
    /// The tool the payment is charged to, derived from the upstream.
    pub(super) tool: String,
    /// What the agent said the tool was (checked against `tool`).
    pub(super) agent_tool: Option<String>,
    pub(super) agent_key: Option<String>,
    pub(super) max_amount_atomic: Option<u128>,
    pub(super) context: Option<api::DecisionContext>,
}

pub(super) fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::new(Code::InvalidRequest, message)
}

fn visible(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

pub(super) fn validate(req: &FetchRequest, shared: &Shared) -> GatewayResult<Fetch> {
    if req.session_id.is_empty() || req.session_id.len() > 128 || !visible(&req.session_id) {
        return Err(invalid("session_id: 1 to 128 visible ASCII characters"));
    }
    let upstream = upstream::build(req, &shared.config.limits)?;
    // The tool is where the money goes: derived from the upstream, never
    // taken from the agent (crate::tools).
    let tool = derive_tool(&upstream.url, &shared.config.tool_map);
    if let Some(t) = &req.tool {
        if t.is_empty() || t.len() > TOOL_BYTES_MAX || !visible(t) {
            return Err(invalid(format!("tool: 1 to {TOOL_BYTES_MAX} visible ASCII characters")));
        }
    }
    if let Some(k) = &req.idempotency_key {
        if k.is_empty() || k.len() > AGENT_KEY_BYTES_MAX || !visible(k) {
            return Err(invalid(format!(
                "idempotency_key: 1 to {AGENT_KEY_BYTES_MAX} visible ASCII characters"
            )));
        }
    }
    let max_amount_atomic = req
        .max_amount_atomic
        .as_deref()
        .map(|m| x402::parse_atomic_amount(m).map_err(|e| invalid(format!("max_amount_atomic: {e}"))))
        .transpose()?;
    Ok(Fetch {
        upstream,
        tool,
        agent_tool: req.tool.clone(),
        agent_key: req.idempotency_key.clone(),
        max_amount_atomic,
        context: req.context.clone(),
    })
}

/// An agent-given tool must be the derived one (checked once the agent is
/// authenticated, so the tool map is not told to strangers).
pub(super) fn check_tool(fetch: &Fetch) -> GatewayResult<()> {
    match &fetch.agent_tool {
        Some(t) if *t != fetch.tool => Err(GatewayError::new(
            Code::ToolMismatch,
            format!(
                "tool {t:?} is not the tool this upstream is charged to ({:?}); the tool follows the upstream \
                 (the gateway's tool map, else host[:port]); omit it or send that one; nothing was sent",
                fetch.tool
            ),
        )),
        _ => Ok(()),
    }
}

/// Like [`ledger_error`], for calls made with the gateway's own token: a
/// 401/403 there means the nodes do not know that token (a configuration
/// problem), not that the agent is wrong.
pub(super) fn gateway_ledger_error(f: LedgerFailure, stage: &str, after: &str) -> GatewayError {
    match f {
        LedgerFailure::Refused(e) if matches!(e.status(), Some(401 | 403)) => GatewayError::new(
            Code::LedgerError,
            format!(
                "{stage}: the ledger refused the gateway's token ({e}); are the nodes started with the same \
                 --gateway-token? {after}"
            ),
        ),
        other => ledger_error(other, stage, after),
    }
}

/// Maps a final ledger failure to the agent's error; `stage` says what was
/// being done, `after` what it means for the money.
pub(super) fn ledger_error(f: LedgerFailure, stage: &str, after: &str) -> GatewayError {
    match f {
        LedgerFailure::Unavailable(m) => GatewayError::new(Code::LedgerUnavailable, format!("{stage}: {m}; {after}")),
        LedgerFailure::Unknown(m) => GatewayError::new(
            Code::LedgerOutcomeUnknown,
            format!("{stage}: {m}; {after}; retry with the same idempotency_key"),
        ),
        LedgerFailure::Refused(e) => match (e.status(), e.code()) {
            (Some(401 | 403), _) | (_, Some("unknown_session")) => {
                GatewayError::new(Code::Unauthorized, "the token does not act for this session")
            }
            (_, Some(api::codes::IDEMPOTENCY_CONFLICT)) => GatewayError::new(
                Code::IdempotencyConflict,
                "this idempotency_key was used for a different payment (amount, tool or context differ)",
            ),
            (Some(400), _) => invalid(format!("{stage}: the ledger refused it: {e}")),
            _ => GatewayError::new(Code::LedgerError, format!("{stage}: {e}; {after}")),
        },
    }
}

pub(super) async fn authenticate(ledger: &Ledger, token: &str, session_id: &str) -> GatewayResult<Session> {
    if !token.starts_with(SESSION_TOKEN_PREFIX) {
        return Err(GatewayError::new(
            Code::Unauthorized,
            "a session token (Authorization: Bearer sct_...) is required",
        ));
    }
    let id = session_id.to_string();
    let view = ledger
        .call("read session", |c| {
            let id = id.clone();
            async move { c.get_session(&id).await }
        })
        .await
        .map_err(|f| match f {
            LedgerFailure::Refused(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                GatewayError::new(Code::Unauthorized, "the token does not act for this session")
            }
            LedgerFailure::Unknown(m) => GatewayError::new(Code::LedgerUnavailable, format!("read session: {m}")),
            other => ledger_error(other, "read session", "nothing was sent"),
        })?;
    if view.status != "active" {
        return Err(GatewayError::new(
            Code::SessionInactive,
            format!("session {} is {}", view.id, view.status),
        ));
    }
    Ok(Session {
        id: view.id,
        asset: view.asset,
        decimals: view.decimals,
        wallet: view.wallet_address,
    })
}
