//! One fetch, and the payment when the upstream asks for one.
//!
//! The order is what makes it safe:
//!
//! 1. validate the request; the tool is derived from the upstream (an
//!    agent-given `tool` must agree), see [`crate::tools`];
//! 2. authenticate the agent (its session token must read its session);
//! 3. check the upstream against the policy, resolving its name once
//!    ([`crate::policy`]); the connection goes to the checked addresses only;
//! 4. send the request unpaid; anything but a 402 is relayed as is;
//! 5. parse the 402 (v1 body or v2 `PAYMENT-REQUIRED`), pick the cheapest
//!    requirement the gateway may pay for this session's asset, and check
//!    the per-payment maximums and the `maxTimeoutSeconds` bound: refusals
//!    here leave nothing behind;
//! 6. **authorize** the amount in the ledger with the agent's token: a
//!    denial ends it, before any signature exists;
//! 7. **pin** the hold (`settling`) with the gateway's own token and a
//!    per-attempt reference that carries the `validBefore` about to be
//!    signed: from here on it never expires on its own, no other attempt
//!    can own it, and the agent's token can no longer release it;
//! 8. sign (EIP-3009) and send the request again with the payment;
//! 9. settled → **capture** with a receipt (gateway token). Anything else
//!    after the signed payment left — refused, failed, another 402, a 4xx,
//!    a 5xx, no settlement header, a dropped connection, no answer — keeps
//!    the hold pinned: the merchant holds a signature it can settle until
//!    `validBefore` whatever it answered, so only reconciliation (checking
//!    the chain) may release it. The hold is voided only when no signature
//!    ever left (a failed pin, a failed signer, a connection that never
//!    opened).

use alloy_primitives::hex;
use api::{AuthorizeRequest, CaptureRequest, ReceiptFields, VoidRequest};
use axum::http::StatusCode;
use serde_json::Value;
use x402::codec::X402Message;
use x402::select::OfferedRequirement;
use x402::{
    build_payment_v1, build_payment_v2, headers, select_requirement, ExactEvmPayload, ExactEvmRequirement,
    PaymentRequiredV1, PaymentRequiredV2, PaymentRequirements, ResourceInfo, SelectError, SettlementResponse,
    SharedSigner, WalletSupport, X402Version, B256,
};

use crate::config::AllowedAsset;
use crate::error::{Code, GatewayError, GatewayResult, RequirementSummary};
use crate::ids;
use crate::ledger::{Ledger, LedgerFailure};
use crate::receipt::{PaymentReference, RECEIPT_TEXT_BYTES_MAX};
use crate::server::Shared;
use crate::tools::{derive_tool, TOOL_BYTES_MAX};
use crate::upstream::{self, BodyError, SendError, UpstreamRequest, UpstreamResponse};
use crate::wire::{FetchRequest, FetchResponse, PaymentInfo, PaymentOutcome};

/// Session tokens start with this (admin tokens are not accepted: an agent
/// acts only as its session).
const SESSION_TOKEN_PREFIX: &str = api::SESSION_TOKEN_PREFIX;
/// Longest agent idempotency key.
const AGENT_KEY_BYTES_MAX: usize = 128;

struct Session {
    id: String,
    asset: String,
    decimals: u8,
    wallet: Option<String>,
}

/// A validated fetch.
struct Fetch {
    upstream: UpstreamRequest,
    /// The tool the payment is charged to, derived from the upstream.
    tool: String,
    /// What the agent said the tool was (checked against `tool`).
    agent_tool: Option<String>,
    agent_key: Option<String>,
    max_amount_atomic: Option<u128>,
    context: Option<api::DecisionContext>,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::new(Code::InvalidRequest, message)
}

fn visible(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

fn validate(req: &FetchRequest, shared: &Shared) -> GatewayResult<Fetch> {
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
fn check_tool(fetch: &Fetch) -> GatewayResult<()> {
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
fn gateway_ledger_error(f: LedgerFailure, stage: &str, after: &str) -> GatewayError {
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
fn ledger_error(f: LedgerFailure, stage: &str, after: &str) -> GatewayError {
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

async fn authenticate(ledger: &Ledger, token: &str, session_id: &str) -> GatewayResult<Session> {
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

/// The whole fetch.
pub(crate) async fn fetch(shared: &Shared, token: &str, req: FetchRequest) -> GatewayResult<FetchResponse> {
    shared.stats.fetches.incr();
    let fetch = validate(&req, shared)?;
    let agent = shared.ledger.with_token(token);
    let session = authenticate(&agent, token, &req.session_id).await?;
    check_tool(&fetch)?;
    let limits = &shared.config.limits;

    // Before anything is sent: the upstream must be allowed, and every
    // address its name resolves to must be; the client is pinned to them.
    let pinned = shared.guard.check(&fetch.upstream.url).await?;
    let http = upstream::http_client(limits, pinned.as_ref().map(|(h, a)| (h.as_str(), a.as_slice())))
        .map_err(|e| GatewayError::new(Code::Internal, format!("upstream client: {e}; nothing was sent")))?;
    let first = upstream::send(&http, &fetch.upstream, None, limits)
        .await
        .map_err(|e| match e {
            SendError::NotSent(m) => GatewayError::new(Code::UpstreamUnreachable, m),
            SendError::MaybeReceived(m) => GatewayError::new(Code::UpstreamTimeout, m),
        })?;
    if first.status != StatusCode::PAYMENT_REQUIRED {
        return relay(first, None);
    }
    shared.stats.payment_required.incr();
    let offer = Offer::parse(&first)?;
    let (wallet, signer) = wallet(shared, &session)?;
    let chosen = choose(&offer, &session, &shared.config, &fetch)?;
    let payment = Payment {
        shared,
        agent: &agent,
        gateway: &shared.gateway_ledger,
        http,
        session: &session,
        fetch: &fetch,
        wallet,
        signer,
        nonce: match &fetch.agent_key {
            Some(key) => ids::derive_nonce(&session.id, wallet, key),
            None => ids::random_nonce(),
        },
        chosen,
    };
    payment.run().await
}

fn wallet(shared: &Shared, session: &Session) -> GatewayResult<(x402::Address, SharedSigner)> {
    let text = session.wallet.as_deref().ok_or_else(|| {
        GatewayError::new(
            Code::WalletUnavailable,
            format!("session {} has no wallet_address", session.id),
        )
    })?;
    let address = x402::exact_evm::parse_evm_address(text).ok_or_else(|| {
        GatewayError::new(
            Code::WalletUnavailable,
            format!("session {}'s wallet_address is not an EVM address", session.id),
        )
    })?;
    let signer = shared.keys.get(&address).ok_or_else(|| {
        GatewayError::new(
            Code::WalletUnavailable,
            format!("the gateway holds no key for wallet {address}"),
        )
    })?;
    Ok((address, signer))
}

/// A parsed 402.
enum Offer {
    V1(PaymentRequiredV1),
    V2(PaymentRequiredV2),
}

impl Offer {
    fn parse(response: &UpstreamResponse) -> GatewayResult<Offer> {
        let malformed =
            |m: String| GatewayError::new(Code::MalformedPaymentRequired, m).with(|b| b.upstream_status = Some(402));
        if let Some(value) = response.headers.get(headers::PAYMENT_REQUIRED) {
            let text = value
                .to_str()
                .map_err(|_| malformed(format!("{} is not visible ASCII", headers::PAYMENT_REQUIRED)))?;
            return PaymentRequiredV2::from_header(text)
                .map(Offer::V2)
                .map_err(|e| malformed(format!("{}: {e}", headers::PAYMENT_REQUIRED)));
        }
        let body = match &response.body {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return Err(malformed("the 402 body is too large".into())),
            Err(BodyError::Failed(m)) => return Err(malformed(format!("the 402 body: {m}"))),
        };
        PaymentRequiredV1::from_json_slice(body).map(Offer::V1).map_err(|e| {
            malformed(format!(
                "the 402 is neither a v2 {} header nor a v1 body: {e}",
                headers::PAYMENT_REQUIRED
            ))
        })
    }
}

/// The requirement the gateway will pay.
struct Chosen {
    exact: ExactEvmRequirement,
    requirement: PaymentRequirements,
    /// v2: echoed in the payment.
    resource: Option<ResourceInfo>,
    extensions: Option<Value>,
    resource_url: String,
    asset: AllowedAsset,
}

fn summary(r: &PaymentRequirements) -> RequirementSummary {
    match r {
        PaymentRequirements::V1(r) => RequirementSummary {
            x402_version: 1,
            scheme: r.scheme.clone(),
            network: r.network.clone(),
            asset: r.asset.clone(),
            amount_atomic: r.max_amount_required.to_string(),
            pay_to: r.pay_to.clone(),
        },
        PaymentRequirements::V2(r) => RequirementSummary {
            x402_version: 2,
            scheme: r.scheme.clone(),
            network: r.network.clone(),
            asset: r.asset.clone(),
            amount_atomic: r.amount.to_string(),
            pay_to: r.pay_to.clone(),
        },
    }
}

/// The cheapest payable requirement, or why there is none. A requirement
/// whose `maxTimeoutSeconds` is above `timeout_max` is never paid: the
/// signature would stay settleable that long.
fn pick<R: OfferedRequirement>(
    offered: &[R],
    wallet: &WalletSupport,
    timeout_max: u64,
) -> GatewayResult<(usize, ExactEvmRequirement)> {
    let mut best: Option<(usize, ExactEvmRequirement)> = None;
    let mut unusable = None;
    let mut too_long = None;
    for i in 0..offered.len() {
        let Ok(selected) = select_requirement(&offered[i..=i], wallet) else {
            continue;
        };
        let exact = selected.exact;
        if exact.amount == 0 || exact.max_timeout_seconds == 0 {
            unusable.get_or_insert(format!(
                "requirement #{i} has a zero amount or a zero maxTimeoutSeconds"
            ));
            continue;
        }
        if exact.max_timeout_seconds > timeout_max {
            too_long.get_or_insert(format!(
                "requirement #{i} asks for maxTimeoutSeconds {}, above the gateway's bound of {timeout_max} s \
                 (a signed payment would stay settleable that long); nothing was signed or held",
                exact.max_timeout_seconds
            ));
            continue;
        }
        if best.as_ref().is_none_or(|(_, b)| exact.amount < b.amount) {
            best = Some((i, exact));
        }
    }
    if let Some(best) = best {
        return Ok(best);
    }
    let malformed =
        |m: String| GatewayError::new(Code::MalformedPaymentRequired, m).with(|b| b.upstream_status = Some(402));
    if let Some(m) = too_long {
        return Err(GatewayError::new(Code::TimeoutAboveMaximum, m).with(|b| b.upstream_status = Some(402)));
    }
    if let Some(m) = unusable {
        return Err(malformed(m));
    }
    Err(match select_requirement(offered, wallet) {
        Err(e @ (SelectError::Malformed { .. } | SelectError::NothingOffered)) => malformed(e.to_string()),
        Err(e) => GatewayError::new(Code::NoPayableRequirement, format!("nothing the gateway may pay: {e}"))
            .with(|b| b.upstream_status = Some(402)),
        Ok(_) => malformed("no usable requirement".into()),
    })
}

fn usable_resource_url(candidate: &str, fallback: &str, max: usize) -> String {
    let fine = !candidate.is_empty() && candidate.len() <= max && !candidate.chars().any(char::is_control);
    if fine {
        candidate.to_string()
    } else {
        fallback.to_string()
    }
}

fn choose(
    offer: &Offer,
    session: &Session,
    config: &crate::config::GatewayConfig,
    fetch: &Fetch,
) -> GatewayResult<Chosen> {
    let url_max = config.limits.url_bytes_max;
    let timeout_max = config.max_timeout_seconds;
    let usable: Vec<&AllowedAsset> = config
        .assets
        .iter()
        .filter(|a| a.code == session.asset && a.decimals == session.decimals)
        .collect();
    if usable.is_empty() {
        return Err(GatewayError::new(
            Code::NoPayableRequirement,
            format!(
                "the gateway pays with no token counted as the session's asset {} ({} decimals)",
                session.asset, session.decimals
            ),
        )
        .with(|b| b.upstream_status = Some(402)));
    }
    let mut wallet = WalletSupport::new();
    for a in &usable {
        wallet.insert(a.network, a.contract);
    }
    let target = fetch.upstream.url.as_str();
    let (exact, requirement, resource, extensions, resource_url) = match offer {
        Offer::V1(p) => {
            let (i, exact) = pick(&p.accepts, &wallet, timeout_max)?;
            let r = &p.accepts[i];
            let url = usable_resource_url(&r.resource, target, url_max);
            (exact, PaymentRequirements::V1(r.clone()), None, None, url)
        }
        Offer::V2(p) => {
            let (i, exact) = pick(&p.accepts, &wallet, timeout_max)?;
            let url = usable_resource_url(&p.resource.url, target, url_max);
            let requirement = PaymentRequirements::V2(p.accepts[i].clone());
            (exact, requirement, Some(p.resource.clone()), p.extensions.clone(), url)
        }
    };
    let asset = usable
        .iter()
        .find(|a| a.network == exact.network && a.contract == exact.asset)
        .map(|a| (*a).clone())
        .ok_or_else(|| GatewayError::new(Code::Internal, "the chosen token is not configured"))?;
    let chosen = Chosen {
        exact,
        requirement,
        resource,
        extensions,
        resource_url,
        asset,
    };
    let with_summary = |e: GatewayError| {
        let s = summary(&chosen.requirement);
        e.with(|b| {
            b.upstream_status = Some(402);
            b.requirement = Some(s);
        })
    };
    let amount = chosen.exact.amount;
    let asset = &chosen.asset;
    if amount > asset.payment_max_atomic {
        return Err(with_summary(GatewayError::new(
            Code::PaymentAboveMaximum,
            format!(
                "the price {amount} is above the gateway's per-payment maximum {} ({} {})",
                asset.payment_max_atomic,
                decimal::format_decimal(asset.payment_max_atomic, asset.decimals, decimal::API_PLACES_MIN),
                asset.code
            ),
        )));
    }
    if let Some(max) = fetch.max_amount_atomic {
        if amount > max {
            return Err(with_summary(GatewayError::new(
                Code::PaymentAboveMaximum,
                format!("the price {amount} is above the request's max_amount_atomic {max}"),
            )));
        }
    }
    let needed = PaymentReference::encoded_len_max(&chosen.exact.domain_name, &chosen.exact.domain_version);
    if needed > RECEIPT_TEXT_BYTES_MAX {
        return Err(with_summary(GatewayError::new(
            Code::NoPayableRequirement,
            "the token's EIP-712 domain name/version are too long to keep in a verifiable receipt",
        )));
    }
    Ok(chosen)
}

/// Unix seconds now.
fn now_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One payment attempt.
struct Payment<'a> {
    shared: &'a Shared,
    /// The ledger as the agent (its session token): authorize, read its
    /// receipts.
    agent: &'a Ledger,
    /// The ledger as the gateway (its own token): pin, read, capture, void.
    gateway: &'a Ledger,
    /// This fetch's upstream client, pinned to the checked addresses.
    http: reqwest::Client,
    session: &'a Session,
    fetch: &'a Fetch,
    wallet: x402::Address,
    signer: SharedSigner,
    nonce: B256,
    chosen: Chosen,
}

/// What the settlement answer means.
enum Settled {
    Paid(SettlementResponse),
    /// The merchant said no (a failed settlement, another 402, a 4xx). It
    /// still holds the signature: the hold stays pinned all the same.
    Refused(Option<String>),
    Unknown(String),
    /// 2xx without a settlement statement: deliver, keep the hold pinned.
    Delivered,
}

impl Payment<'_> {
    fn version(&self) -> X402Version {
        self.chosen.exact.version
    }

    fn info(&self, authorization_id: &str, outcome: PaymentOutcome, valid_before: u64) -> PaymentInfo {
        let amount = self.chosen.exact.amount;
        PaymentInfo {
            outcome,
            valid_before,
            authorization_id: authorization_id.to_string(),
            receipt_id: None,
            transaction_hash: None,
            x402_version: self.version().as_u8(),
            network: self.chosen.exact.network.caip2().to_string(),
            token: self.chosen.exact.asset.to_checksum(None),
            asset: self.chosen.asset.code.clone(),
            amount_atomic: amount.to_string(),
            amount: decimal::format_decimal(amount, self.chosen.asset.decimals, decimal::API_PLACES_MIN),
            pay_to: self.chosen.exact.pay_to.to_checksum(None),
            wallet_address: self.wallet.to_checksum(None),
            nonce: format!("0x{}", hex::encode(self.nonce.as_slice())),
        }
    }

    fn with_requirement(&self, e: GatewayError) -> GatewayError {
        let s = summary(&self.chosen.requirement);
        e.with(|b| b.requirement = Some(s))
    }

    async fn run(self) -> GatewayResult<FetchResponse> {
        let authorization_id = self.authorize().await?;
        // The signing time is fixed before the pin, so the pin's reference
        // can carry the validBefore that will be signed: a reconciler reads
        // from the ledger alone when the payment can no longer land.
        let signed_at = now_unix_secs();
        let Some(valid_before) = signed_at.checked_add(self.chosen.exact.max_timeout_seconds) else {
            let released = self.release(&authorization_id).await;
            return Err(self.not_signed(
                GatewayError::new(Code::Internal, "validBefore overflows; nothing was signed"),
                &authorization_id,
                released,
            ));
        };
        let attempt: u64 = rand::random();
        let reference = ids::settling_reference(
            self.chosen.exact.network,
            self.chosen.exact.asset,
            self.wallet,
            self.nonce,
            valid_before,
            attempt,
        );
        self.pin(&authorization_id, &reference).await?;

        // Only the owner of the pin gets here: sign and send.
        let (header, value, signed) = match self.sign(signed_at, valid_before).await {
            Ok(signed) => signed,
            Err(e) => {
                let released = self.release(&authorization_id).await;
                return Err(self.not_signed(e, &authorization_id, released));
            }
        };
        self.shared.stats.payments_sent.incr();
        tracing::info!(
            session = %self.session.id,
            authorization = %authorization_id,
            amount = self.chosen.exact.amount,
            network = %self.chosen.exact.network,
            reference = %reference,
            valid_before,
            "sending an x402 payment"
        );
        let answer = upstream::send(
            &self.http,
            &self.fetch.upstream,
            Some((header, value)),
            &self.shared.config.limits,
        )
        .await;
        // From here on a signed payment may have left: the hold is never
        // voided by the gateway again (only captured), see the module doc.
        let response = match answer {
            Err(SendError::NotSent(m)) => {
                // The connection never opened: the signature never left.
                let released = self.release(&authorization_id).await;
                let mut e = GatewayError::new(Code::UpstreamUnreachable, format!("{m}; the payment was not sent"));
                if !released {
                    e.body
                        .message
                        .push_str("; the hold could not be released and awaits reconciliation");
                }
                return Err(e.with(|b| b.authorization_id = Some(authorization_id)));
            }
            Err(SendError::MaybeReceived(m)) => {
                return Err(self.unsettled(&authorization_id, &reference, valid_before, &m, None, None))
            }
            Ok(response) => response,
        };
        let upstream_status = response.status.as_u16();
        match self.settlement(&response) {
            Settled::Paid(s) => self.capture(&authorization_id, &signed, s, response).await,
            Settled::Refused(reason) => {
                let why = format!(
                    "the merchant answered HTTP {upstream_status}{} without confirming settlement, but it holds \
                     the signed payment",
                    reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                );
                Err(self.unsettled(
                    &authorization_id,
                    &reference,
                    valid_before,
                    &why,
                    Some(upstream_status),
                    reason,
                ))
            }
            Settled::Unknown(m) => Err(self.unsettled(
                &authorization_id,
                &reference,
                valid_before,
                &m,
                Some(upstream_status),
                None,
            )),
            Settled::Delivered => {
                self.shared.stats.unsettled.incr();
                tracing::warn!(
                    authorization = %authorization_id,
                    reference = %reference,
                    "the merchant answered 2xx without a settlement header; the hold stays pinned for reconciliation"
                );
                relay(
                    response,
                    Some(self.info(&authorization_id, PaymentOutcome::Unsettled, valid_before)),
                )
            }
        }
    }

    /// An error from before any signature left, after the hold was (or
    /// could not be) released.
    fn not_signed(&self, e: GatewayError, authorization_id: &str, released: bool) -> GatewayError {
        self.with_requirement(e).with(|b| {
            b.authorization_id = Some(authorization_id.to_string());
            if !released {
                b.message
                    .push_str("; the hold could not be released and awaits reconciliation");
            }
        })
    }

    /// Step 4: the ledger decides, before anything is signed.
    async fn authorize(&self) -> GatewayResult<String> {
        let request = AuthorizeRequest {
            amount: None,
            amount_atomic: Some(self.chosen.exact.amount.to_string()),
            tool: self.fetch.tool.clone(),
            idempotency_key: Some(ids::authorize_key(self.nonce)),
            hold_seconds: Some(self.shared.config.hold_seconds),
            context: self.fetch.context.clone(),
        };
        let session_id = self.session.id.clone();
        let decision = self
            .agent
            .call("authorize", |c| {
                let (sid, req) = (session_id.clone(), request.clone());
                async move { c.authorize(&sid, &req).await }
            })
            .await
            .map_err(|f| self.with_requirement(ledger_error(f, "authorize", "nothing was signed")))?;
        if decision.decision != "approved" {
            self.shared.stats.denials.incr();
            let reason = decision.reason.clone().unwrap_or_else(|| "denied".into());
            let message = format!(
                "the ledger denied the payment: {}; nothing was signed",
                decision.message.clone().unwrap_or_else(|| reason.clone())
            );
            return Err(self
                .with_requirement(GatewayError::new(Code::BudgetDenied, message))
                .with(|b| {
                    b.reason = Some(reason);
                    b.remaining = decision.remaining.clone();
                    b.upstream_status = Some(402);
                }));
        }
        let id = decision
            .authorization_id
            .clone()
            .ok_or_else(|| GatewayError::new(Code::LedgerError, "an approval without an authorization id"))?;
        if decision.replayed {
            self.check_replayed(&id).await?;
        }
        Ok(id)
    }

    /// The agent's key was seen before: only a live, unpinned hold (an
    /// attempt that died before it pinned, so signed nothing) may go on.
    async fn check_replayed(&self, id: &str) -> GatewayResult<()> {
        let auth_id = id.to_string();
        let view = self
            .gateway
            .call("read authorization", |c| {
                let id = auth_id.clone();
                async move { c.get_authorization(&id).await }
            })
            .await
            .map_err(|f| gateway_ledger_error(f, "read authorization", "nothing was signed"))?;
        let with_id = |e: GatewayError| e.with(|b| b.authorization_id = Some(auth_id.clone()));
        match view.status.as_str() {
            "held" if view.settling_since_ms.is_none() => Ok(()),
            "held" => Err(with_id(GatewayError::new(
                Code::PaymentPending,
                "a payment for this idempotency_key may be in flight or awaits reconciliation; nothing new was signed",
            ))),
            "captured" => Err(self.already_paid(id, view.receipt_id).await),
            status => Err(with_id(GatewayError::new(
                Code::PreviousAttemptFailed,
                format!("an earlier attempt with this idempotency_key ended {status}; use a new key to try again"),
            ))),
        }
    }

    async fn already_paid(&self, id: &str, receipt_id: Option<String>) -> GatewayError {
        let transaction_hash = match &receipt_id {
            Some(rid) => self
                .agent
                .call("read receipt", |c| {
                    let rid = rid.clone();
                    async move { c.get_receipt(&rid).await }
                })
                .await
                .ok()
                .and_then(|r| r.transaction_hash),
            None => None,
        };
        GatewayError::new(
            Code::AlreadyPaid,
            "this idempotency_key already paid; nothing new was signed",
        )
        .with(|b| {
            b.authorization_id = Some(id.to_string());
            b.receipt_id = receipt_id;
            b.transaction_hash = transaction_hash;
        })
    }

    /// Step 5: pin the hold; the reference names this attempt, so a second
    /// attempt cannot pin (and so cannot sign).
    async fn pin(&self, id: &str, reference: &str) -> GatewayResult<()> {
        let result = self
            .gateway
            .call("pin hold", |c| {
                let (id, reference) = (id.to_string(), reference.to_string());
                async move { c.mark_settling(&id, &reference).await }
            })
            .await;
        let with_id = |e: GatewayError| e.with(|b| b.authorization_id = Some(id.to_string()));
        match result {
            Ok(_) => Ok(()),
            Err(f) => match f.code() {
                Some("already_exists") => Err(with_id(GatewayError::new(
                    Code::PaymentPending,
                    "another attempt owns the payment for this idempotency_key; nothing new was signed",
                ))),
                Some("already_captured") => Err(self.already_paid(id, None).await),
                Some("already_voided" | "authorization_expired") => Err(with_id(GatewayError::new(
                    Code::PreviousAttemptFailed,
                    "the hold ended before the payment could be sent; use a new idempotency_key",
                ))),
                _ => {
                    // Nothing was signed; give the hold back (if the pin
                    // did land, the void ends it too).
                    let released = self.release(id).await;
                    let after = if released {
                        "nothing was signed; the hold was released"
                    } else {
                        "nothing was signed; the hold awaits reconciliation"
                    };
                    Err(with_id(gateway_ledger_error(f, "pin hold", after)))
                }
            },
        }
    }

    /// Step 8: the signature, made only now, at `now` (so `validBefore` is
    /// `now + maxTimeoutSeconds`, which [`pick`] bounded). A signature whose
    /// `validBefore` is not `valid_before` (the one the pin announced) is
    /// never sent.
    async fn sign(&self, now: u64, valid_before: u64) -> GatewayResult<(&'static str, String, ExactEvmPayload)> {
        let failed = |e: x402::BuildError| GatewayError::new(Code::SignerFailed, format!("{e}; nothing was sent"));
        let (header, value, signed) = match &self.chosen.requirement {
            PaymentRequirements::V1(r) => {
                let p = build_payment_v1(r, &self.signer, now, self.nonce)
                    .await
                    .map_err(failed)?;
                let value = p
                    .to_header()
                    .map_err(|e| GatewayError::new(Code::Internal, e.to_string()))?;
                (headers::X_PAYMENT, value, p.payload)
            }
            PaymentRequirements::V2(r) => {
                let p = build_payment_v2(
                    r,
                    self.chosen.resource.clone(),
                    self.chosen.extensions.clone(),
                    &self.signer,
                    now,
                    self.nonce,
                )
                .await
                .map_err(failed)?;
                let value = p
                    .to_header()
                    .map_err(|e| GatewayError::new(Code::Internal, e.to_string()))?;
                (headers::PAYMENT_SIGNATURE, value, p.payload)
            }
        };
        self.shared.stats.signatures.incr();
        if signed.authorization.valid_before != valid_before {
            return Err(GatewayError::new(
                Code::Internal,
                format!(
                    "the signed validBefore {} is not the pinned {valid_before}; nothing was sent",
                    signed.authorization.valid_before
                ),
            ));
        }
        Ok((header, value, signed))
    }

    /// Reads what the merchant said about settlement.
    fn settlement(&self, response: &UpstreamResponse) -> Settled {
        let name = headers::settlement_header(self.version());
        let decoded = response.headers.get(name).map(|v| {
            v.to_str()
                .map_err(|e| e.to_string())
                .and_then(|t| SettlementResponse::from_header(t).map_err(|e| e.to_string()))
        });
        match decoded {
            Some(Ok(s)) if s.success => return Settled::Paid(s),
            Some(Ok(s)) => return Settled::Refused(s.error_reason.or(Some("settlement failed".into()))),
            Some(Err(e)) => tracing::warn!(header = name, error = %e, "undecodable settlement header"),
            None => {}
        }
        let status = response.status;
        if status.is_success() {
            Settled::Delivered
        } else if status.is_client_error() {
            Settled::Refused(self.refusal_reason(response))
        } else {
            Settled::Unknown(format!(
                "the merchant answered HTTP {} without a settlement",
                status.as_u16()
            ))
        }
    }

    /// The x402 error text of a refusal (v2 header, else v1 body).
    fn refusal_reason(&self, response: &UpstreamResponse) -> Option<String> {
        if let Some(v) = response.headers.get(headers::PAYMENT_REQUIRED) {
            if let Some(e) = v
                .to_str()
                .ok()
                .and_then(|t| PaymentRequiredV2::from_header(t).ok())
                .and_then(|p| p.error)
            {
                return Some(e);
            }
        }
        let body = response.body.as_ref().ok()?;
        let value: Value = serde_json::from_slice(body).ok()?;
        value
            .get("error")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(200).collect())
    }

    /// Step 7, success: record the spend with a verifiable receipt.
    async fn capture(
        &self,
        id: &str,
        signed: &ExactEvmPayload,
        settlement: SettlementResponse,
        response: UpstreamResponse,
    ) -> GatewayResult<FetchResponse> {
        let auth = &signed.authorization;
        let reference = PaymentReference {
            nonce: auth.nonce,
            pay_to: auth.to,
            valid_after: auth.valid_after,
            valid_before: auth.valid_before,
            token: self.chosen.exact.asset,
            domain_name: self.chosen.exact.domain_name.clone(),
            domain_version: self.chosen.exact.domain_version.clone(),
        };
        let transaction = settlement.transaction.trim().to_string();
        let transaction = (!transaction.is_empty()
            && transaction.len() <= RECEIPT_TEXT_BYTES_MAX
            && !transaction.chars().any(char::is_control))
        .then_some(transaction);
        let request = CaptureRequest {
            amount: None,
            amount_atomic: Some(auth.value.to_string()),
            idempotency_key: Some(ids::capture_key(self.nonce)),
            receipt: Some(ReceiptFields {
                payment_request_id: Some(reference.encode()),
                signature: Some(format!("0x{}", hex::encode(&signed.signature))),
                transaction_hash: transaction.clone(),
                wallet_address: Some(self.wallet.to_checksum(None)),
                network: Some(self.chosen.exact.network.caip2().to_string()),
                resource_url: Some(self.chosen.resource_url.clone()),
            }),
        };
        let captured = self
            .gateway
            .call("capture", |c| {
                let (id, req) = (id.to_string(), request.clone());
                async move { c.capture(&id, &req).await }
            })
            .await;
        let mut info = match captured {
            Ok(c) => {
                self.shared.stats.captures.incr();
                tracing::info!(authorization = %id, receipt = %c.receipt_id, "x402 payment captured");
                PaymentInfo {
                    receipt_id: Some(c.receipt_id),
                    ..self.info(id, PaymentOutcome::Paid, auth.valid_before)
                }
            }
            Err(f) => {
                self.shared.stats.unsettled.incr();
                tracing::error!(
                    authorization = %id,
                    error = %f,
                    "the merchant settled but the capture failed; the hold stays pinned for reconciliation"
                );
                self.info(id, PaymentOutcome::PaidCapturePending, auth.valid_before)
            }
        };
        info.transaction_hash = transaction;
        relay(response, Some(info))
    }

    /// Nothing was signed, or the signature never left: give the hold back.
    /// Never called once a signed payment may have left. False when it could
    /// not be done (the pinned hold then waits for reconciliation).
    async fn release(&self, id: &str) -> bool {
        let request = VoidRequest {
            idempotency_key: Some(ids::void_key(self.nonce)),
        };
        match self
            .gateway
            .call("void", |c| {
                let (id, req) = (id.to_string(), request.clone());
                async move { c.void(&id, &req).await }
            })
            .await
        {
            Ok(_) => {
                self.shared.stats.voids.incr();
                tracing::info!(authorization = %id, "x402 hold released");
                true
            }
            Err(f) => {
                self.shared.stats.unsettled.incr();
                tracing::error!(authorization = %id, error = %f, "could not release the hold; it awaits reconciliation");
                false
            }
        }
    }

    /// A signed payment left and no settlement was confirmed: keep the
    /// pinned hold; never guess, never void (the merchant can settle until
    /// `valid_before`).
    fn unsettled(
        &self,
        id: &str,
        reference: &str,
        valid_before: u64,
        why: &str,
        upstream_status: Option<u16>,
        error_reason: Option<String>,
    ) -> GatewayError {
        self.shared.stats.unsettled.incr();
        tracing::warn!(
            authorization = %id,
            reference = %reference,
            valid_before,
            why,
            "x402 payment outcome unknown; the hold stays pinned for reconciliation"
        );
        self.with_requirement(GatewayError::new(
            Code::PaymentOutcomeUnknown,
            format!(
                "a signed payment was sent and its outcome is unknown ({why}); the merchant can still settle it \
                 until validBefore {valid_before} (Unix seconds), so the amount stays reserved (the hold is pinned) \
                 until an operator reconciles it; a retry with the same idempotency_key will not pay again"
            ),
        ))
        .with(|b| {
            b.authorization_id = Some(id.to_string());
            b.valid_before = Some(valid_before);
            b.upstream_status = upstream_status;
            b.error_reason = error_reason;
        })
    }
}

/// The upstream's answer for the agent.
fn relay(response: UpstreamResponse, payment: Option<PaymentInfo>) -> GatewayResult<FetchResponse> {
    let body = match response.body {
        Ok(b) => b,
        Err(e) => {
            let (code, message) = match e {
                BodyError::TooLarge => (
                    Code::ResponseTooLarge,
                    "the upstream's body is larger than the gateway relays".to_string(),
                ),
                BodyError::Failed(m) => (Code::UpstreamUnreachable, format!("reading the upstream's body: {m}")),
            };
            return Err(GatewayError::new(code, message).with(|b| {
                b.upstream_status = Some(response.status.as_u16());
                if let Some(p) = payment {
                    b.authorization_id = Some(p.authorization_id);
                    b.receipt_id = p.receipt_id;
                    b.transaction_hash = p.transaction_hash;
                }
            }));
        }
    };
    let (text, base64) = upstream::relay_body(&body);
    Ok(FetchResponse {
        status: response.status.as_u16(),
        headers: upstream::relay_headers(&response.headers),
        body: text,
        body_base64: base64,
        payment,
    })
}
