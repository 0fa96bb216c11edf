//! Reconciling pinned holds: what is pinned, and since when it can no longer
//! be settled.
//!
//! A hold stays pinned (settling) when a signed payment left the gateway and
//! no settlement was confirmed. The merchant can settle the signature until
//! its `validBefore`, which the pin's reference carries
//! ([`crate::ids::settling_reference`]). The procedure, for an operator with
//! the admin or the gateway token:
//!
//! 1. list the pinned holds ([`list_pinned`], `spendcap gateway reconcile
//!    --list`);
//! 2. for each, ask the token contract `authorizationState(wallet, nonce)`
//!    on its network: `true` means the transfer happened → capture the hold
//!    (with the transaction hash, `spendcap capture`);
//! 3. `false` and `validBefore` has passed → the payment can never land →
//!    void it (`spendcap void`). `false` before `validBefore` → wait: the
//!    merchant may still settle it.
//!
//! The gateway never checks the chain itself, so it never voids a pinned
//! hold on its own.

use api::AuthorizationView;
use client::Client;
use serde::Serialize;

use crate::ids::{parse_settling_reference, SettlingReference};

/// Items asked for per page.
pub const PINNED_PAGE_ITEMS: u32 = 500;
/// Pages read at most (so at most 50,000 pinned holds are listed).
pub const PINNED_PAGES_MAX: usize = 100;

/// One pinned hold, with what its reference says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PinnedHold {
    pub authorization_id: String,
    pub session_id: String,
    pub tool: String,
    pub amount: String,
    pub settling_since_ms: Option<u64>,
    pub reference: Option<String>,
    /// CAIP-2 network, token, wallet and nonce to ask the chain about, and
    /// the signed `validBefore`; absent when the reference is not the
    /// gateway's.
    pub network: Option<String>,
    pub token: Option<String>,
    pub wallet: Option<String>,
    pub nonce: Option<String>,
    pub valid_before: Option<u64>,
    /// `validBefore` has passed at `now`: if the chain shows no transfer,
    /// voiding is safe. `None` when unknown.
    pub expired: Option<bool>,
}

impl PinnedHold {
    pub fn new(view: &AuthorizationView, now_unix_secs: u64) -> PinnedHold {
        let parsed: Option<SettlingReference> = view.settling_reference.as_deref().and_then(parse_settling_reference);
        PinnedHold {
            authorization_id: view.id.clone(),
            session_id: view.session_id.clone(),
            tool: view.tool.clone(),
            amount: view.amount.clone(),
            settling_since_ms: view.settling_since_ms,
            reference: view.settling_reference.clone(),
            network: parsed.as_ref().map(|p| p.network.clone()),
            token: parsed.as_ref().map(|p| p.token.to_checksum(None)),
            wallet: parsed.as_ref().map(|p| p.wallet.to_checksum(None)),
            nonce: parsed
                .as_ref()
                .map(|p| format!("0x{}", hex::encode(p.nonce.as_slice()))),
            valid_before: parsed.as_ref().map(|p| p.valid_before),
            expired: parsed.as_ref().map(|p| now_unix_secs > p.valid_before),
        }
    }
}

/// Every pinned hold the node lists (`client` carries the admin or the
/// gateway token), oldest first.
pub async fn list_pinned(client: &Client, now_unix_secs: u64) -> Result<Vec<PinnedHold>, client::ClientError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..PINNED_PAGES_MAX {
        let mut path = format!("/v1/authorizations?status=settling&limit={PINNED_PAGE_ITEMS}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let text = client.get_text(&path).await?;
        let page: api::Page<AuthorizationView> =
            serde_json::from_str(&text).map_err(|e| client::ClientError::Decode(e.to_string()))?;
        out.extend(page.items.iter().map(|v| PinnedHold::new(v, now_unix_secs)));
        match page.next_after {
            Some(next) if next.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => after = Some(next),
            _ => break,
        }
    }
    Ok(out)
}
