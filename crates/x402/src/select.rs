//! Choosing which offered requirement a wallet pays.

use std::collections::BTreeSet;

use alloy_primitives::Address;
use thiserror::Error;

use crate::exact_evm::{parse_evm_address, ExactEvmRequirement, RequirementError, EXACT_SCHEME};
use crate::network::Network;
use crate::types::{PaymentRequirementsV1, PaymentRequirementsV2, X402Version};

/// What a wallet can pay with: a set of (network, token contract) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalletSupport {
    assets: BTreeSet<(Network, Address)>,
}

impl WalletSupport {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a (network, asset) pair, builder style.
    pub fn with(mut self, network: Network, asset: Address) -> Self {
        self.insert(network, asset);
        self
    }

    pub fn insert(&mut self, network: Network, asset: Address) {
        self.assets.insert((network, asset));
    }

    pub fn supports_network(&self, network: Network) -> bool {
        self.assets.iter().any(|(n, _)| *n == network)
    }

    pub fn supports(&self, network: Network, asset: Address) -> bool {
        self.assets.contains(&(network, asset))
    }
}

/// A requirement of some protocol version that selection can inspect.
pub trait OfferedRequirement {
    fn version(&self) -> X402Version;
    fn scheme(&self) -> &str;
    fn network(&self) -> &str;
    fn asset(&self) -> &str;
    fn to_exact_evm(&self) -> Result<ExactEvmRequirement, RequirementError>;
}

impl OfferedRequirement for PaymentRequirementsV1 {
    fn version(&self) -> X402Version {
        X402Version::V1
    }
    fn scheme(&self) -> &str {
        &self.scheme
    }
    fn network(&self) -> &str {
        &self.network
    }
    fn asset(&self) -> &str {
        &self.asset
    }
    fn to_exact_evm(&self) -> Result<ExactEvmRequirement, RequirementError> {
        ExactEvmRequirement::from_v1(self)
    }
}

impl OfferedRequirement for PaymentRequirementsV2 {
    fn version(&self) -> X402Version {
        X402Version::V2
    }
    fn scheme(&self) -> &str {
        &self.scheme
    }
    fn network(&self) -> &str {
        &self.network
    }
    fn asset(&self) -> &str {
        &self.asset
    }
    fn to_exact_evm(&self) -> Result<ExactEvmRequirement, RequirementError> {
        ExactEvmRequirement::from_v2(self)
    }
}

/// The requirement chosen by [`select_requirement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected<'a, R> {
    /// Position in the offered list.
    pub index: usize,
    /// The requirement as offered (echo this as v2 `accepted`).
    pub requirement: &'a R,
    /// The same, validated and typed.
    pub exact: ExactEvmRequirement,
}

/// Why no offered requirement is payable. The variant names the furthest stage any
/// requirement reached: scheme, then network, then asset, then well-formedness.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectError {
    #[error("the server offered no payment requirements")]
    NothingOffered,
    #[error("no offered requirement uses the `exact` scheme (offered schemes: {offered:?})")]
    NoSupportedScheme { offered: Vec<String> },
    #[error("no `exact` requirement is on a network the wallet supports (offered: {offered:?})")]
    NoSupportedNetwork { offered: Vec<String> },
    #[error("no `exact` requirement on a supported network uses an asset the wallet holds (offered: {offered:?})")]
    NoSupportedAsset { offered: Vec<String> },
    #[error("requirement #{index} matches the wallet but is malformed: {error}")]
    Malformed { index: usize, error: RequirementError },
}

/// Picks the first offered requirement the wallet can pay with the `exact` EVM scheme.
pub fn select_requirement<'a, R: OfferedRequirement>(
    offered: &'a [R],
    wallet: &WalletSupport,
) -> Result<Selected<'a, R>, SelectError> {
    if offered.is_empty() {
        return Err(SelectError::NothingOffered);
    }
    let mut schemes = Vec::new();
    let mut networks = Vec::new();
    let mut assets = Vec::new();
    let mut malformed = None;
    for (index, requirement) in offered.iter().enumerate() {
        if requirement.scheme() != EXACT_SCHEME {
            schemes.push(requirement.scheme().to_owned());
            continue;
        }
        let network = match Network::from_wire(requirement.network(), requirement.version()) {
            Some(n) if wallet.supports_network(n) => n,
            _ => {
                networks.push(requirement.network().to_owned());
                continue;
            }
        };
        match parse_evm_address(requirement.asset()) {
            Some(asset) if wallet.supports(network, asset) => {}
            _ => {
                assets.push(format!("{}@{}", requirement.asset(), requirement.network()));
                continue;
            }
        }
        match requirement.to_exact_evm() {
            Ok(exact) => {
                return Ok(Selected {
                    index,
                    requirement,
                    exact,
                })
            }
            Err(error) => {
                malformed.get_or_insert(SelectError::Malformed { index, error });
            }
        }
    }
    if let Some(error) = malformed {
        return Err(error);
    }
    if !assets.is_empty() {
        return Err(SelectError::NoSupportedAsset { offered: assets });
    }
    if !networks.is_empty() {
        return Err(SelectError::NoSupportedNetwork { offered: networks });
    }
    Err(SelectError::NoSupportedScheme { offered: schemes })
}
