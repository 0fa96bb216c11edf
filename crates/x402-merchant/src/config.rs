//! Merchant configuration, clock and failure switches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy_primitives::{address, Address};
use serde_json::{json, Value};
use x402::exact_evm::{BASE_SEPOLIA_USDC, BASE_SEPOLIA_USDC_DOMAIN_NAME, BASE_SEPOLIA_USDC_DOMAIN_VERSION};
use x402::{Network, X402Version};

/// One paid `GET` route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Absolute path, e.g. `/paid/v1/report`.
    pub path: String,
    /// Wire version: v1 → 402 JSON body + `X-PAYMENT`; v2 → `PAYMENT-REQUIRED` header +
    /// `PAYMENT-SIGNATURE`.
    pub version: X402Version,
    /// Price in atomic units of the asset (USDC has 6 decimals: 10_000 = 0.01 USDC).
    pub price_atomic: u128,
    pub description: String,
    /// JSON body returned with 200 once paid.
    pub body: Value,
}

impl RouteConfig {
    pub fn new(path: impl Into<String>, version: X402Version, price_atomic: u128) -> Self {
        let path = path.into();
        Self {
            description: format!("paid resource {path}"),
            body: json!({ "data": "paid content", "path": path }),
            path,
            version,
            price_atomic,
        }
    }
}

/// The merchant's notion of "now" (Unix seconds), used for validity windows.
#[derive(Debug, Clone, Default)]
pub enum MerchantClock {
    /// The system clock.
    #[default]
    System,
    /// A clock tests set and advance by hand (shared: clones see the same time).
    Manual(Arc<AtomicU64>),
}

impl MerchantClock {
    pub fn manual(start_unix_secs: u64) -> Self {
        MerchantClock::Manual(Arc::new(AtomicU64::new(start_unix_secs)))
    }

    pub fn now_unix_secs(&self) -> u64 {
        match self {
            MerchantClock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                // A clock before 1970 is a broken host; 0 makes every payment "not yet
                // valid" rather than panicking.
                .unwrap_or(0),
            MerchantClock::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Sets a manual clock; no effect on the system clock.
    pub fn set(&self, unix_secs: u64) {
        if let MerchantClock::Manual(now) = self {
            now.store(unix_secs, Ordering::SeqCst);
        }
    }

    /// Advances a manual clock; no effect on the system clock.
    pub fn advance(&self, secs: u64) {
        if let MerchantClock::Manual(now) = self {
            // fetch_update never fails when the closure always returns Some.
            let _ = now.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_add(secs)));
        }
    }
}

/// Failure switches for gateway tests. Settable at start or at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Behave correctly.
    #[default]
    None,
    /// Verification passes but settlement fails: 402 with a settlement header
    /// `{success:false, errorReason}`; the nonce is not consumed.
    SettlementFails { error_reason: String },
    /// After receiving a payment header, never answer (until the merchant shuts down). Nothing
    /// is settled: models a crash before settlement.
    HangBeforeSettle,
    /// Verify and settle (the payment is recorded as settled), then never answer: models a
    /// crash after the money moved but before the client heard.
    HangAfterSettle,
    /// Serve malformed requirements: v1 a 402 body whose requirement lacks `payTo`/`asset`
    /// and has a negative amount; v2 a `PAYMENT-REQUIRED` header that is not base64.
    InvalidRequirements,
    /// Offer only this scheme (everything else well formed); payments are then rejected
    /// with `invalid_scheme`.
    UnknownScheme { scheme: String },
    /// A hostile or broken merchant: verify the payment, settle it when `settle` (the money
    /// moves, the nonce is consumed) or not, then answer HTTP `status` with a JSON error body
    /// and no settlement header, as if it had refused it. The gateway must not release the
    /// hold: the merchant still holds the signature.
    AnswerAfterPayment { status: u16, settle: bool },
}

/// Merchant configuration. [`Default`] gives two routes, `/paid/v1/resource` (v1) and
/// `/paid/v2/resource` (v2), each at 10_000 atomic units of Base Sepolia USDC.
#[derive(Debug, Clone)]
pub struct MerchantConfig {
    pub routes: Vec<RouteConfig>,
    pub network: Network,
    /// Token contract (EIP-712 verifying contract).
    pub asset: Address,
    /// EIP-712 domain name of the token, sent as `extra.name`.
    pub asset_domain_name: String,
    /// EIP-712 domain version of the token, sent as `extra.version`.
    pub asset_domain_version: String,
    pub pay_to: Address,
    pub max_timeout_seconds: u64,
    pub clock: MerchantClock,
    /// Initial failure switch (see [`crate::MerchantHandle::set_failure`]).
    pub failure: FailureMode,
    /// Settlements recorded before the merchant refuses more (each keeps its nonce).
    pub settled_payments_max: usize,
    /// Largest request body accepted (facilitator endpoints).
    pub request_body_bytes_max: usize,
}

/// Default recipient: the address used in the x402 specification examples.
pub const DEFAULT_PAY_TO: Address = address!("209693Bc6afc0C5328bA36FaF03C514EF312287C");

impl Default for MerchantConfig {
    fn default() -> Self {
        Self {
            routes: vec![
                RouteConfig::new("/paid/v1/resource", X402Version::V1, 10_000),
                RouteConfig::new("/paid/v2/resource", X402Version::V2, 10_000),
            ],
            network: Network::BaseSepolia,
            asset: BASE_SEPOLIA_USDC,
            asset_domain_name: BASE_SEPOLIA_USDC_DOMAIN_NAME.to_owned(),
            asset_domain_version: BASE_SEPOLIA_USDC_DOMAIN_VERSION.to_owned(),
            pay_to: DEFAULT_PAY_TO,
            max_timeout_seconds: 60,
            clock: MerchantClock::System,
            failure: FailureMode::None,
            settled_payments_max: 10_000,
            request_body_bytes_max: 64 * 1024,
        }
    }
}
