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
//!
//! Each step has its module; this one runs them in order ([`fetch`], then
//! `Payment::run`):
//! [`request`] (1–2), [`offer`] (5), [`hold`] (6, 7, 9), [`merchant`] (8),
//! [`attempt`] (one attempt's state, release and "outcome unknown"),
//! [`relay`] (the answer to the agent).

mod attempt;
mod hold;
mod merchant;
mod offer;
mod relay;
mod request;

use axum::http::StatusCode;
use x402::SharedSigner;

use self::attempt::{now_unix_secs, Payment};
use self::merchant::Settled;
use self::offer::{choose, Offer};
use self::relay::relay;
use self::request::{authenticate, check_tool, validate, Session};
use crate::error::{Code, GatewayError, GatewayResult};
use crate::ids;
use crate::shared::Shared;
use crate::upstream::{self, SendError};
use crate::wire::{FetchRequest, FetchResponse, PaymentOutcome};

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

impl Payment<'_> {
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
}
