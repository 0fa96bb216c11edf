//! Registry of the EVM networks x402 names: v1 short names ↔ CAIP-2 ids ↔ chain ids.

use crate::types::X402Version;

/// An EVM network known to this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    BaseSepolia,
    Base,
    AvalancheFuji,
    Avalanche,
}

impl Network {
    /// Every known network.
    pub const ALL: [Network; 4] = [
        Network::BaseSepolia,
        Network::Base,
        Network::AvalancheFuji,
        Network::Avalanche,
    ];

    /// EIP-155 chain id.
    pub const fn chain_id(self) -> u64 {
        match self {
            Network::BaseSepolia => 84_532,
            Network::Base => 8_453,
            Network::AvalancheFuji => 43_113,
            Network::Avalanche => 43_114,
        }
    }

    /// The x402 v1 network name (e.g. `base-sepolia`).
    pub const fn v1_name(self) -> &'static str {
        match self {
            Network::BaseSepolia => "base-sepolia",
            Network::Base => "base",
            Network::AvalancheFuji => "avalanche-fuji",
            Network::Avalanche => "avalanche",
        }
    }

    /// The CAIP-2 identifier used by x402 v2 (e.g. `eip155:84532`).
    pub const fn caip2(self) -> &'static str {
        match self {
            Network::BaseSepolia => "eip155:84532",
            Network::Base => "eip155:8453",
            Network::AvalancheFuji => "eip155:43113",
            Network::Avalanche => "eip155:43114",
        }
    }

    /// The network's name as written on the wire for a protocol version.
    pub const fn wire_name(self, version: X402Version) -> &'static str {
        match version {
            X402Version::V1 => self.v1_name(),
            X402Version::V2 => self.caip2(),
        }
    }

    /// Looks up a v1 name (exact, lowercase as the spec writes them).
    pub fn from_v1_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.v1_name() == name)
    }

    /// Looks up a CAIP-2 identifier.
    pub fn from_caip2(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.caip2() == id)
    }

    /// Looks up an EIP-155 chain id.
    pub fn from_chain_id(chain_id: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.chain_id() == chain_id)
    }

    /// Parses the wire form expected for a protocol version (v1 name or CAIP-2).
    pub fn from_wire(name: &str, version: X402Version) -> Option<Self> {
        match version {
            X402Version::V1 => Self::from_v1_name(name),
            X402Version::V2 => Self::from_caip2(name),
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.caip2())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_round_trips() {
        for n in Network::ALL {
            assert_eq!(Network::from_v1_name(n.v1_name()), Some(n));
            assert_eq!(Network::from_caip2(n.caip2()), Some(n));
            assert_eq!(Network::from_chain_id(n.chain_id()), Some(n));
            assert_eq!(
                Network::from_wire(n.wire_name(X402Version::V1), X402Version::V1),
                Some(n)
            );
            assert_eq!(
                Network::from_wire(n.wire_name(X402Version::V2), X402Version::V2),
                Some(n)
            );
        }
        assert_eq!(Network::from_v1_name("base-sepolia"), Some(Network::BaseSepolia));
        assert_eq!(Network::from_caip2("eip155:84532"), Some(Network::BaseSepolia));
        assert_eq!(Network::BaseSepolia.chain_id(), 84_532);
        assert_eq!(Network::from_caip2("eip155:8453"), Some(Network::Base));
        assert_eq!(
            Network::from_v1_name("avalanche-fuji").map(|n| n.chain_id()),
            Some(43_113)
        );
    }

    #[test]
    fn unknown_and_cross_version_names_are_rejected() {
        assert_eq!(Network::from_v1_name("eip155:84532"), None);
        assert_eq!(Network::from_caip2("base-sepolia"), None);
        assert_eq!(Network::from_caip2("eip155:1"), None);
        assert_eq!(Network::from_v1_name("Base-Sepolia"), None);
        assert_eq!(Network::from_chain_id(1), None);
        assert_eq!(Network::from_wire("base", X402Version::V2), None);
    }
}
