//! The gateway's configuration: which (network, token) pairs it pays with,
//! the per-payment maximum, its own ledger credential, which upstreams it
//! may reach, how payments are named as tools, and every limit by name.

pub use crate::limits::{ConfigError, Limits};
use crate::policy::UpstreamPolicy;
use crate::tools::ToolRule;

use x402::exact_evm::{parse_evm_address, BASE_SEPOLIA_USDC};
use x402::{Address, Network, X402Version};

/// A token the gateway may pay with, and the ledger asset it is counted in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedAsset {
    pub network: Network,
    /// The token contract (EIP-712 verifying contract).
    pub contract: Address,
    /// The ledger's asset code a session must have to pay with this token
    /// (`USDC`): amounts are then the same atomic units on both sides.
    pub code: String,
    pub decimals: u8,
    /// The largest single payment, in atomic units of this token.
    pub payment_max_atomic: u128,
}

impl AllowedAsset {
    /// Base Sepolia USDC (6 decimals), counted as the ledger's `USDC`.
    pub fn base_sepolia_usdc(payment_max_atomic: u128) -> Self {
        AllowedAsset {
            network: Network::BaseSepolia,
            contract: BASE_SEPOLIA_USDC,
            code: "USDC".into(),
            decimals: 6,
            payment_max_atomic,
        }
    }
}

/// A credential that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The bounds of a gateway token (the node's own rule for it: 16 to 256
/// visible ASCII characters).
pub const GATEWAY_TOKEN_BYTES_MIN: usize = 16;
pub const GATEWAY_TOKEN_BYTES_MAX: usize = 256;

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Ledger API base URLs (`http://127.0.0.1:7700`); calls move on to the
    /// next one when a node cannot be reached.
    pub ledger_urls: Vec<String>,
    /// What the gateway pays with; anything else is refused.
    pub assets: Vec<AllowedAsset>,
    /// Lifetime of a hold before it is pinned (it is pinned right after it is
    /// granted, before anything is signed, so this only matters when the
    /// gateway dies in between).
    pub hold_seconds: u64,
    /// The gateway's own ledger credential (the node's `--gateway-token`).
    /// It pins, captures and voids holds and reads them; the agent's session
    /// token is used only to authenticate the agent and to authorize.
    pub gateway_token: Secret,
    /// The longest payment window the gateway signs: a requirement whose
    /// `maxTimeoutSeconds` is above it is refused before anything is held,
    /// and the signed `validBefore` is at most this far after signing. A
    /// payment that left without a settlement keeps its hold pinned until
    /// then at least.
    pub max_timeout_seconds: u64,
    /// Which upstreams may be fetched (see [`UpstreamPolicy`]).
    pub upstreams: UpstreamPolicy,
    /// Which tool a payment is charged to, by upstream (see
    /// [`crate::tools`]): the longest matching rule wins, else the
    /// upstream's `host[:port]`.
    pub tool_map: Vec<ToolRule>,
    pub limits: Limits,
}

impl GatewayConfig {
    /// A configuration with defaults: no upstream allowed yet (set
    /// [`GatewayConfig::upstreams`]), no tool map.
    pub fn new(ledger_urls: Vec<String>, assets: Vec<AllowedAsset>, gateway_token: impl Into<String>) -> Self {
        GatewayConfig {
            ledger_urls,
            assets,
            hold_seconds: HOLD_SECONDS_DEFAULT,
            gateway_token: Secret::new(gateway_token),
            max_timeout_seconds: MAX_TIMEOUT_SECONDS_DEFAULT,
            upstreams: UpstreamPolicy::default(),
            tool_map: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// Checks what a running gateway relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ledger_urls.is_empty() {
            return Err(ConfigError::new("at least one ledger URL is needed"));
        }
        for url in &self.ledger_urls {
            let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError::new(format!("ledger URL {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::new(format!(
                    "ledger URL {url:?}: must be http:// or https://"
                )));
            }
        }
        if self.assets.is_empty() {
            return Err(ConfigError::new("at least one allowed (network, asset) pair is needed"));
        }
        if self.hold_seconds == 0 || self.hold_seconds > 3600 {
            return Err(ConfigError::new("hold_seconds must be between 1 and 3600"));
        }
        if self.limits.ledger_attempts_max == 0 {
            return Err(ConfigError::new("ledger_attempts_max must be at least 1"));
        }
        let token = self.gateway_token.expose();
        if !(GATEWAY_TOKEN_BYTES_MIN..=GATEWAY_TOKEN_BYTES_MAX).contains(&token.len())
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::new(format!(
                "the gateway token must be {GATEWAY_TOKEN_BYTES_MIN} to {GATEWAY_TOKEN_BYTES_MAX} visible ASCII characters"
            )));
        }
        if token.starts_with(api::SESSION_TOKEN_PREFIX) {
            return Err(ConfigError::new(format!(
                "the gateway token must not look like a session token ({}...)",
                api::SESSION_TOKEN_PREFIX
            )));
        }
        if self.max_timeout_seconds == 0 || self.max_timeout_seconds > MAX_TIMEOUT_SECONDS_LIMIT {
            return Err(ConfigError::new(format!(
                "max_timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS_LIMIT}"
            )));
        }
        if self.limits.upstream_addresses_max == 0 {
            return Err(ConfigError::new("upstream_addresses_max must be at least 1"));
        }
        Ok(())
    }
}

/// Hold lifetime before pinning, unless configured.
pub const HOLD_SECONDS_DEFAULT: u64 = 60;

/// The longest payment window (`maxTimeoutSeconds`) signed, unless
/// configured: five minutes.
pub const MAX_TIMEOUT_SECONDS_DEFAULT: u64 = 300;
/// The largest value `max_timeout_seconds` may be configured to (a day): a
/// signed payment that may land that late keeps its hold pinned as long.
pub const MAX_TIMEOUT_SECONDS_LIMIT: u64 = 86_400;

/// Parses a network written as a v1 name (`base-sepolia`) or CAIP-2
/// (`eip155:84532`).
pub fn parse_network(text: &str) -> Option<Network> {
    Network::from_wire(text, X402Version::V1).or_else(|| Network::from_wire(text, X402Version::V2))
}

/// Parses `NETWORK/CONTRACT/CODE/DECIMALS`, e.g.
/// `base-sepolia/0x036CbD53842c5426634e7929541eC2318f3dCF7e/USDC/6`; the
/// per-payment maximum is given separately, as a decimal.
pub fn parse_asset(text: &str, payment_max: &str) -> Result<AllowedAsset, ConfigError> {
    let parts: Vec<&str> = text.split('/').map(str::trim).collect();
    let [network, contract, code, decimals] = parts.as_slice() else {
        return Err(ConfigError::new(format!(
            "asset {text:?} is not NETWORK/CONTRACT/CODE/DECIMALS"
        )));
    };
    let network = parse_network(network).ok_or_else(|| ConfigError::new(format!("unknown network {network:?}")))?;
    let contract =
        parse_evm_address(contract).ok_or_else(|| ConfigError::new(format!("{contract:?} is not an EVM address")))?;
    if code.is_empty() || code.len() > 16 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ConfigError::new(format!(
            "asset code {code:?} must be 1 to 16 letters or digits"
        )));
    }
    let decimals: u8 = decimals
        .parse()
        .ok()
        .filter(|d| *d <= 30)
        .ok_or_else(|| ConfigError::new(format!("decimals {decimals:?} must be 0 to 30")))?;
    Ok(AllowedAsset {
        network,
        contract,
        code: code.to_string(),
        decimals,
        payment_max_atomic: decimal::parse_decimal(payment_max, decimals).map_err(|_| {
            ConfigError::new(format!(
                "{payment_max:?} is not a decimal amount with at most {decimals} decimals"
            ))
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_parse() {
        let a = parse_asset(
            "base-sepolia/0x036CbD53842c5426634e7929541eC2318f3dCF7e/USDC/6",
            "10.00",
        )
        .unwrap();
        assert_eq!(a, AllowedAsset::base_sepolia_usdc(10_000_000));
        let b = parse_asset("eip155:8453/0x833589fcd6edb6e08f4c7c32d4f71b54bda02913/USDC/6", "1").unwrap();
        assert_eq!(b.network, Network::Base);
        assert!(parse_asset("base-sepolia/0x036C/USDC/6", "1").is_err());
        assert!(parse_asset("mars/0x036CbD53842c5426634e7929541eC2318f3dCF7e/USDC/6", "1").is_err());
        assert!(parse_asset("base-sepolia/0x036CbD53842c5426634e7929541eC2318f3dCF7e/USDC", "1").is_err());
        assert!(parse_asset("base-sepolia/0x036CbD53842c5426634e7929541eC2318f3dCF7e/US DC/6", "1").is_err());
    }
}
