//! What goes into the log: commands, batched into entries, and the checks
//! a command passes before it is proposed and again when it is applied.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::amount::{Amount, AmountError, AmountInput, ASSET_DECIMALS_MAX};
use crate::ids::{check_text, Asset, BudgetId, DecisionContext, HoldId, IdempotencyKey, NameError, SessionId, Tool};

/// Most commands one log entry may carry.
pub const ENTRY_COMMANDS_MAX: usize = 4096;
/// Most per-tool caps on one budget or session.
pub const TOOL_CAPS_MAX: usize = 64;
/// Most tools in a session's allowlist or a budget's blocked list.
pub const TOOL_SET_MAX: usize = 64;
/// Live holds a session may have at once when its creator names no limit.
pub const SESSION_LIVE_HOLDS_DEFAULT: u32 = 1_000;
/// The largest live-hold limit a session may be given.
pub const SESSION_LIVE_HOLDS_MAX: u32 = 100_000;
/// Deepest budget tree (a root budget has depth 1).
pub const BUDGET_DEPTH_MAX: u8 = 8;
/// Hold time-to-live when the caller names none.
pub const HOLD_TTL_DEFAULT_MS: u64 = 5 * 60 * 1000;
/// Longest hold time-to-live a caller may ask for.
pub const HOLD_TTL_MAX_MS: u64 = 60 * 60 * 1000;
/// Longest session lifetime.
pub const SESSION_TTL_MAX_MS: u64 = 366 * 24 * 60 * 60 * 1000;
/// How long an idempotency key is remembered, by log time. Longer than the
/// longest hold, so a retry can never create a second hold for a key whose
/// first hold might still be live.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Longest URL kept in a receipt, in bytes.
pub const URL_BYTES_MAX: usize = 2048;

// Limits that relate, checked when the crate compiles.
const _: () = assert!(
    IDEMPOTENCY_WINDOW_MS > HOLD_TTL_MAX_MS,
    "a retry must find its key while the first hold may still be live"
);
const _: () = assert!(HOLD_TTL_DEFAULT_MS <= HOLD_TTL_MAX_MS);
const _: () = assert!(SESSION_LIVE_HOLDS_DEFAULT <= SESSION_LIVE_HOLDS_MAX);

/// The SHA-256 of a session token. Only the hash is replicated.
pub type TokenHash = [u8; 32];

/// One Raft log entry's payload: commands decided together, stamped with the
/// leader's clock when it proposed them. Apply uses this stamp and nothing
/// else for time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub time_ms: u64,
    pub commands: Vec<Command>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateBudget(CreateBudget),
    UpdateBudget(UpdateBudget),
    CreateSession(CreateSession),
    RevokeSession {
        session_id: SessionId,
    },
    RotateSessionToken {
        session_id: SessionId,
        token_hash: TokenHash,
    },
    Authorize(Authorize),
    Capture(Capture),
    Void(Void),
    MarkSettling(MarkSettling),
}

/// Marks a hold as having a payment in flight (see [`crate::state::Settling`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkSettling {
    pub hold_id: HoldId,
    pub caller: Caller,
    pub reference: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBudget {
    pub id: BudgetId,
    pub asset: Asset,
    pub cap: Amount,
    pub tool_caps: BTreeMap<Tool, Amount>,
    pub parent: Option<BudgetId>,
    /// Tools no session drawing on this budget (or on a budget below it)
    /// may be authorized for, whatever the caps say.
    pub blocked_tools: BTreeSet<Tool>,
}

/// Changes a budget's caps. A cap may not go below what is already spent and
/// held against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateBudget {
    pub id: BudgetId,
    pub cap: Option<Amount>,
    /// Replaces the whole per-tool cap table when given. A tool cap that is
    /// new counts spend from when it is added, plus every live hold it now
    /// covers (so it may not be set below those holds).
    pub tool_caps: Option<BTreeMap<Tool, Amount>>,
    /// Replaces the blocked-tool list when given.
    pub blocked_tools: Option<BTreeSet<Tool>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSession {
    pub id: SessionId,
    pub token_hash: TokenHash,
    pub asset: Asset,
    pub cap: Amount,
    /// Lifetime from the entry's time; the ledger computes the expiry.
    pub ttl_ms: u64,
    pub agent_id: String,
    pub wallet_address: Option<String>,
    pub tool_caps: BTreeMap<Tool, Amount>,
    pub budget: Option<BudgetId>,
    /// The tools the session may be authorized for; `None` allows any tool.
    pub tools: Option<BTreeSet<Tool>>,
    /// Most live holds at once; `None` means [`SESSION_LIVE_HOLDS_DEFAULT`].
    pub live_holds_max: Option<u32>,
}

impl CreateSession {
    /// The live-hold limit the session gets.
    pub fn live_holds_limit(&self) -> u32 {
        self.live_holds_max.unwrap_or(SESSION_LIVE_HOLDS_DEFAULT)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorize {
    pub session_id: SessionId,
    pub amount: AmountInput,
    pub tool: Tool,
    pub idempotency_key: Option<IdempotencyKey>,
    /// How long the hold lives unless captured or voided; defaults to
    /// [`HOLD_TTL_DEFAULT_MS`].
    pub hold_ttl_ms: Option<u64>,
    pub context: DecisionContext,
    /// The hash of the session token the request came with (`None` for the
    /// admin). Checked at apply against the session's current token, so a
    /// token superseded by a rotation (or a node that has not applied the
    /// rotation yet) can never act: `Refusal::TokenSuperseded`.
    pub credential: Option<TokenHash>,
}

/// Who asks to resolve a hold: the admin, a session (which may touch only
/// its own holds, and never one pinned as settling), or the payment gateway
/// (which pins holds while a signed payment may be in flight, and is the only
/// party besides the admin that may resolve a pinned hold).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    Admin,
    Session(SessionId),
    /// Added after `Session`: postcard encodes variants by index.
    Gateway,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    pub hold_id: HoldId,
    pub caller: Caller,
    /// At most the held amount; `None` captures all of it.
    pub amount: Option<AmountInput>,
    pub receipt: ReceiptInput,
    pub idempotency_key: Option<IdempotencyKey>,
    /// As [`Authorize::credential`], for a `Caller::Session`.
    pub credential: Option<TokenHash>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Void {
    pub hold_id: HoldId,
    pub caller: Caller,
    pub idempotency_key: Option<IdempotencyKey>,
    /// As [`Authorize::credential`], for a `Caller::Session`.
    pub credential: Option<TokenHash>,
}

/// The payment facts a capture records in its receipt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiptInput {
    pub payment_request_id: Option<String>,
    pub signature: Option<String>,
    /// Optional until the payment settles.
    pub transaction_hash: Option<String>,
    /// Defaults to the session's wallet address.
    pub wallet_address: Option<String>,
    pub network: Option<String>,
    pub resource_url: Option<String>,
}

/// A command no node should have proposed; a node checks this before
/// proposing, and apply checks it again so a bad entry cannot corrupt state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct InvalidCommand {
    pub field: String,
    pub message: String,
}

impl InvalidCommand {
    pub fn new(field: impl Into<String>, message: impl ToString) -> Self {
        InvalidCommand {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

fn name(field: &str, r: Result<(), NameError>) -> Result<(), InvalidCommand> {
    r.map_err(|e| InvalidCommand::new(field, e))
}

fn amount(field: &str, r: Result<(), AmountError>) -> Result<(), InvalidCommand> {
    r.map_err(|e| InvalidCommand::new(field, e))
}

fn positive(field: &str, a: Amount) -> Result<(), InvalidCommand> {
    if a.is_zero() {
        return Err(InvalidCommand::new(field, AmountError::Zero));
    }
    Ok(())
}

fn asset(a: &Asset) -> Result<(), InvalidCommand> {
    name("asset", a.code.validate())?;
    if a.decimals > ASSET_DECIMALS_MAX {
        return Err(InvalidCommand::new(
            "decimals",
            format!("at most {ASSET_DECIMALS_MAX} decimals"),
        ));
    }
    Ok(())
}

fn tool_caps(caps: &BTreeMap<Tool, Amount>) -> Result<(), InvalidCommand> {
    if caps.len() > TOOL_CAPS_MAX {
        return Err(InvalidCommand::new(
            "tool_caps",
            format!("at most {TOOL_CAPS_MAX} per-tool caps"),
        ));
    }
    for (tool, cap) in caps {
        name("tool_caps", tool.validate())?;
        positive(&format!("tool_caps.{tool}"), *cap)?;
    }
    Ok(())
}

fn tool_set(field: &str, tools: &BTreeSet<Tool>) -> Result<(), InvalidCommand> {
    if tools.len() > TOOL_SET_MAX {
        return Err(InvalidCommand::new(field, format!("at most {TOOL_SET_MAX} tools")));
    }
    for tool in tools {
        name(field, tool.validate())?;
    }
    Ok(())
}

fn optional_text(field: &str, value: &Option<String>, max: usize) -> Result<(), InvalidCommand> {
    if let Some(v) = value {
        if v.len() > max {
            return Err(InvalidCommand::new(field, format!("longer than {max} bytes")));
        }
        name(field, check_text_unbounded(v))?;
    }
    Ok(())
}

fn check_text_unbounded(v: &str) -> Result<(), NameError> {
    if v.chars().any(char::is_control) {
        return Err(NameError::BadCharacter {
            what: "text",
            allowed: "printable characters",
        });
    }
    Ok(())
}

impl Command {
    /// Everything about a command that can be checked without the state.
    pub fn validate(&self) -> Result<(), InvalidCommand> {
        match self {
            Command::CreateBudget(c) => {
                name("id", c.id.validate())?;
                asset(&c.asset)?;
                positive("cap", c.cap)?;
                tool_caps(&c.tool_caps)?;
                tool_set("blocked_tools", &c.blocked_tools)?;
                if let Some(p) = &c.parent {
                    name("parent", p.validate())?;
                    if p == &c.id {
                        return Err(InvalidCommand::new("parent", "a budget cannot be its own parent"));
                    }
                }
                Ok(())
            }
            Command::UpdateBudget(c) => {
                name("id", c.id.validate())?;
                if let Some(cap) = c.cap {
                    positive("cap", cap)?;
                }
                if let Some(caps) = &c.tool_caps {
                    tool_caps(caps)?;
                }
                if let Some(blocked) = &c.blocked_tools {
                    tool_set("blocked_tools", blocked)?;
                }
                if c.cap.is_none() && c.tool_caps.is_none() && c.blocked_tools.is_none() {
                    return Err(InvalidCommand::new("cap", "nothing to update"));
                }
                Ok(())
            }
            Command::CreateSession(c) => {
                name("id", c.id.validate())?;
                asset(&c.asset)?;
                positive("cap", c.cap)?;
                if c.ttl_ms == 0 || c.ttl_ms > SESSION_TTL_MAX_MS {
                    return Err(InvalidCommand::new(
                        "expires_in_seconds",
                        format!("must be between 1 second and {} days", SESSION_TTL_MAX_MS / 86_400_000),
                    ));
                }
                if c.agent_id.is_empty() {
                    return Err(InvalidCommand::new("agent_id", "must not be empty"));
                }
                name("agent_id", check_text(&c.agent_id, "agent_id"))?;
                if let Some(w) = &c.wallet_address {
                    name("wallet_address", check_text(w, "wallet_address"))?;
                }
                tool_caps(&c.tool_caps)?;
                if let Some(b) = &c.budget {
                    name("budget", b.validate())?;
                }
                if let Some(tools) = &c.tools {
                    tool_set("tools", tools)?;
                }
                if let Some(max) = c.live_holds_max {
                    if max == 0 || max > SESSION_LIVE_HOLDS_MAX {
                        return Err(InvalidCommand::new(
                            "live_holds_max",
                            format!("must be between 1 and {SESSION_LIVE_HOLDS_MAX}"),
                        ));
                    }
                }
                Ok(())
            }
            Command::RevokeSession { session_id } | Command::RotateSessionToken { session_id, .. } => {
                name("session_id", session_id.validate())
            }
            Command::Authorize(c) => {
                name("session_id", c.session_id.validate())?;
                amount("amount", c.amount.check_syntax())?;
                name("tool", c.tool.validate())?;
                if let Some(k) = &c.idempotency_key {
                    name("idempotency_key", k.validate())?;
                }
                if let Some(ttl) = c.hold_ttl_ms {
                    if ttl == 0 || ttl > HOLD_TTL_MAX_MS {
                        return Err(InvalidCommand::new(
                            "hold_seconds",
                            format!("must be between 1 and {} seconds", HOLD_TTL_MAX_MS / 1000),
                        ));
                    }
                }
                name("context", c.context.validate())
            }
            Command::Capture(c) => {
                if let Caller::Session(s) = &c.caller {
                    name("session_id", s.validate())?;
                }
                if let Some(a) = &c.amount {
                    amount("amount", a.check_syntax())?;
                }
                if let Some(k) = &c.idempotency_key {
                    name("idempotency_key", k.validate())?;
                }
                let r = &c.receipt;
                for (field, value) in [
                    ("receipt.payment_request_id", &r.payment_request_id),
                    ("receipt.signature", &r.signature),
                    ("receipt.transaction_hash", &r.transaction_hash),
                    ("receipt.wallet_address", &r.wallet_address),
                    ("receipt.network", &r.network),
                ] {
                    optional_text(field, value, crate::ids::TEXT_BYTES_MAX)?;
                }
                optional_text("receipt.resource_url", &r.resource_url, URL_BYTES_MAX)
            }
            Command::MarkSettling(c) => {
                if let Caller::Session(s) = &c.caller {
                    name("session_id", s.validate())?;
                }
                if c.reference.is_empty() {
                    return Err(InvalidCommand::new("reference", "must not be empty"));
                }
                name("reference", check_text(&c.reference, "reference"))
            }
            Command::Void(c) => {
                if let Caller::Session(s) = &c.caller {
                    name("session_id", s.validate())?;
                }
                if let Some(k) = &c.idempotency_key {
                    name("idempotency_key", k.validate())?;
                }
                Ok(())
            }
        }
    }
}
