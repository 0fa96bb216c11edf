//! x402 (HTTP 402 "Payment Required") protocol support for spendcap.
//!
//! * [`types`]: wire types for protocol versions 1 and 2 (requirements, payment payloads,
//!   settlement responses, facilitator requests/responses).
//! * [`codec`]: base64 header and JSON body encode/decode with typed errors and size limits.
//! * [`headers`]: HTTP header names, in one place.
//! * [`network`]: v1 network names ↔ CAIP-2 identifiers ↔ EVM chain ids.
//! * [`amount`]: checked parsing of decimal atomic-unit strings (no floats anywhere).
//! * [`exact_evm`]: the `exact` scheme on EVM chains — EIP-3009 `TransferWithAuthorization`
//!   signed with EIP-712; building, signing, signer recovery and facilitator-style verification.
//! * [`signer`]: the [`Signer`] abstraction (async, so a remote KMS can plug in) and a local
//!   k256 key implementation.
//! * [`select`]: picking the first payable requirement for a wallet.

pub mod amount;
pub mod codec;
pub mod exact_evm;
pub mod headers;
pub mod network;
pub mod reason;
pub mod select;
pub mod signer;
pub mod types;

pub use alloy_primitives::{Address, Bytes, Signature, B256, U256};
pub use amount::{parse_atomic_amount, parse_unix_seconds, AmountError};
pub use codec::{DecodeError, EncodeError, X402Message};
pub use exact_evm::{
    build_payment_v1, build_payment_v2, recover_signer, sign_exact_evm, verify, BuildError, ExactEvmRequirement,
    RequirementError, VerifiedPayment, VerifyError,
};
pub use network::Network;
pub use reason::ErrorReason;
pub use select::{select_requirement, SelectError, Selected, WalletSupport};
pub use signer::{DynSigner, LocalKeySigner, SharedSigner, Signer, SignerError};
pub use types::*;
