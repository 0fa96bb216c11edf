//! The 402: parsed (v1 body or v2 `PAYMENT-REQUIRED`), and the requirement
//! the gateway will pay chosen from it, within its bounds (step 5).

use serde_json::Value;
use x402::codec::X402Message;
use x402::select::OfferedRequirement;
use x402::{
    headers, select_requirement, ExactEvmRequirement, PaymentRequiredV1, PaymentRequiredV2, PaymentRequirements,
    ResourceInfo, SelectError, WalletSupport,
};

use super::request::{Fetch, Session};
use crate::config::{AllowedAsset, GatewayConfig};
use crate::error::{Code, GatewayError, GatewayResult, RequirementSummary};
use crate::receipt::{PaymentReference, RECEIPT_TEXT_BYTES_MAX};
use crate::upstream::{BodyError, UpstreamResponse};

/// A parsed 402.
pub(super) enum Offer {
    V1(PaymentRequiredV1),
    V2(PaymentRequiredV2),
}

impl Offer {
    pub(super) fn parse(response: &UpstreamResponse) -> GatewayResult<Offer> {
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
pub(super) struct Chosen {
    pub(super) exact: ExactEvmRequirement,
    pub(super) requirement: PaymentRequirements,
    /// v2: echoed in the payment.
    pub(super) resource: Option<ResourceInfo>,
    pub(super) extensions: Option<Value>,
    pub(super) resource_url: String,
    pub(super) asset: AllowedAsset,
}

pub(super) fn summary(r: &PaymentRequirements) -> RequirementSummary {
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

pub(super) fn choose(offer: &Offer, session: &Session, config: &GatewayConfig, fetch: &Fetch) -> GatewayResult<Chosen> {
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
