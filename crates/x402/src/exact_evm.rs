//! The `exact` scheme on EVM chains: an EIP-3009 `TransferWithAuthorization` signed with
//! EIP-712 over the token contract's domain.
//!
//! Domain: `name`/`version` come from the requirement's `extra`, `chainId` from the network,
//! `verifyingContract` is the requirement's `asset`. A wrong domain name (e.g. `"USD Coin"`
//! instead of `"USDC"` on Base Sepolia) yields a valid-looking signature that recovers to a
//! different address, which on-chain means the transfer reverts.

use std::borrow::Cow;

use alloy_primitives::{Address, Signature, B256, U256};
use alloy_sol_types::{sol, Eip712Domain, SolStruct};
use serde_json::Value;
use thiserror::Error;

use crate::network::Network;
use crate::reason::ErrorReason;
use crate::signer::{Signer, SignerError};
use crate::types::{
    ExactEvmAuthorization, ExactEvmPayload, PaymentPayload, PaymentPayloadV1, PaymentPayloadV2, PaymentRequirements,
    PaymentRequirementsV1, PaymentRequirementsV2, ResourceInfo, X402Version,
};

sol! {
    /// EIP-3009 `TransferWithAuthorization`, the EIP-712 struct the payer signs.
    #[derive(Debug, PartialEq, Eq)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// The scheme name.
pub const EXACT_SCHEME: &str = "exact";
/// Reference clients backdate `validAfter` by this much to tolerate clock skew (seconds).
pub const VALID_AFTER_BACKDATE_SECS: u64 = 600;
/// Length of an `r ‖ s ‖ v` signature (bytes).
pub const EVM_SIGNATURE_BYTES: usize = 65;

/// Base Sepolia USDC, the default test asset.
pub const BASE_SEPOLIA_USDC: Address = alloy_primitives::address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
/// EIP-712 domain name of Base Sepolia USDC (Base mainnet uses `"USD Coin"`).
pub const BASE_SEPOLIA_USDC_DOMAIN_NAME: &str = "USDC";
/// EIP-712 domain version of Base Sepolia USDC.
pub const BASE_SEPOLIA_USDC_DOMAIN_VERSION: &str = "2";

/// Builds the EIP-712 domain of an EIP-3009 token.
pub fn token_domain(name: &str, version: &str, chain_id: u64, verifying_contract: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(Cow::Owned(name.to_owned())),
        Some(Cow::Owned(version.to_owned())),
        Some(U256::from(chain_id)),
        Some(verifying_contract),
        None,
    )
}

/// Parses an EVM address written as `0x` + 40 hex digits. Mixed-case input must carry a
/// valid EIP-55 checksum; all-lowercase or all-uppercase input is accepted as is.
pub fn parse_evm_address(text: &str) -> Option<Address> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))?;
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        let prefixed = format!("0x{digits}");
        Address::parse_checksummed(&prefixed, None).ok()
    } else {
        digits.parse().ok()
    }
}

/// Why a requirement cannot be paid or verified with the `exact` EVM scheme.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequirementError {
    #[error("scheme {0:?} is not `exact`")]
    UnsupportedScheme(String),
    #[error("network {network:?} is not a known x402 v{version} EVM network")]
    UnknownNetwork { network: String, version: X402Version },
    #[error("asset {0:?} is not an EVM address")]
    InvalidAsset(String),
    #[error("payTo {0:?} is not an EVM address")]
    InvalidPayTo(String),
    #[error("extra.{0} (EIP-712 domain) is missing or not a string")]
    MissingDomainField(&'static str),
}

impl RequirementError {
    /// The x402 reason code for this problem.
    pub fn reason(&self) -> ErrorReason {
        match self {
            RequirementError::UnsupportedScheme(_) => ErrorReason::InvalidScheme,
            RequirementError::UnknownNetwork { .. } => ErrorReason::InvalidNetwork,
            RequirementError::InvalidAsset(_)
            | RequirementError::InvalidPayTo(_)
            | RequirementError::MissingDomainField(_) => ErrorReason::InvalidPaymentRequirements,
        }
    }
}

/// A requirement of either version, validated and typed for the `exact` EVM scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactEvmRequirement {
    pub version: X402Version,
    pub network: Network,
    /// Token contract (EIP-712 `verifyingContract`).
    pub asset: Address,
    pub pay_to: Address,
    /// Atomic units (v1 `maxAmountRequired`, v2 `amount`).
    pub amount: u128,
    pub max_timeout_seconds: u64,
    /// EIP-712 domain `name` from `extra.name`.
    pub domain_name: String,
    /// EIP-712 domain `version` from `extra.version`.
    pub domain_version: String,
}

struct RawRequirement<'a> {
    version: X402Version,
    scheme: &'a str,
    network: &'a str,
    asset: &'a str,
    pay_to: &'a str,
    amount: u128,
    max_timeout_seconds: u64,
    extra: Option<&'a Value>,
}

fn domain_field(extra: Option<&Value>, field: &'static str) -> Result<String, RequirementError> {
    extra
        .and_then(|e| e.get(field))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(RequirementError::MissingDomainField(field))
}

impl ExactEvmRequirement {
    fn from_raw(raw: RawRequirement<'_>) -> Result<Self, RequirementError> {
        if raw.scheme != EXACT_SCHEME {
            return Err(RequirementError::UnsupportedScheme(raw.scheme.to_owned()));
        }
        let network = Network::from_wire(raw.network, raw.version).ok_or_else(|| RequirementError::UnknownNetwork {
            network: raw.network.to_owned(),
            version: raw.version,
        })?;
        let asset = parse_evm_address(raw.asset).ok_or_else(|| RequirementError::InvalidAsset(raw.asset.to_owned()))?;
        let pay_to =
            parse_evm_address(raw.pay_to).ok_or_else(|| RequirementError::InvalidPayTo(raw.pay_to.to_owned()))?;
        Ok(Self {
            version: raw.version,
            network,
            asset,
            pay_to,
            amount: raw.amount,
            max_timeout_seconds: raw.max_timeout_seconds,
            domain_name: domain_field(raw.extra, "name")?,
            domain_version: domain_field(raw.extra, "version")?,
        })
    }

    pub fn from_v1(req: &PaymentRequirementsV1) -> Result<Self, RequirementError> {
        Self::from_raw(RawRequirement {
            version: X402Version::V1,
            scheme: &req.scheme,
            network: &req.network,
            asset: &req.asset,
            pay_to: &req.pay_to,
            amount: req.max_amount_required,
            max_timeout_seconds: req.max_timeout_seconds,
            extra: req.extra.as_ref(),
        })
    }

    pub fn from_v2(req: &PaymentRequirementsV2) -> Result<Self, RequirementError> {
        Self::from_raw(RawRequirement {
            version: X402Version::V2,
            scheme: &req.scheme,
            network: &req.network,
            asset: &req.asset,
            pay_to: &req.pay_to,
            amount: req.amount,
            max_timeout_seconds: req.max_timeout_seconds,
            extra: req.extra.as_ref(),
        })
    }

    pub fn from_requirements(req: &PaymentRequirements) -> Result<Self, RequirementError> {
        match req {
            PaymentRequirements::V1(r) => Self::from_v1(r),
            PaymentRequirements::V2(r) => Self::from_v2(r),
        }
    }

    /// The token's EIP-712 domain for this requirement.
    pub fn domain(&self) -> Eip712Domain {
        token_domain(
            &self.domain_name,
            &self.domain_version,
            self.network.chain_id(),
            self.asset,
        )
    }
}

impl ExactEvmAuthorization {
    /// The EIP-712 struct these parameters describe.
    pub fn to_eip3009(&self) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: U256::from(self.value),
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        }
    }

    /// The EIP-712 signing digest under `domain`.
    pub fn signing_hash(&self, domain: &Eip712Domain) -> B256 {
        self.to_eip3009().eip712_signing_hash(domain)
    }
}

/// Why a payload signature is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureProblem {
    #[error("signature is {len_bytes} bytes, expected 65")]
    WrongLength { len_bytes: usize },
    #[error("signature v byte {0} is not 0, 1, 27 or 28")]
    InvalidV(u8),
    #[error("signature s is in the upper half of the curve order (malleable form)")]
    HighS,
    #[error("no public key recovers from the signature: {0}")]
    Unrecoverable(String),
}

/// Parses a 65-byte `r ‖ s ‖ v` signature as the USDC contract would accept it.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, SignatureProblem> {
    let raw: &[u8; EVM_SIGNATURE_BYTES] = bytes
        .try_into()
        .map_err(|_| SignatureProblem::WrongLength { len_bytes: bytes.len() })?;
    let v = raw[EVM_SIGNATURE_BYTES - 1];
    if !matches!(v, 0 | 1 | 27 | 28) {
        return Err(SignatureProblem::InvalidV(v));
    }
    let signature = Signature::from_raw_array(raw).map_err(|e| SignatureProblem::Unrecoverable(e.to_string()))?;
    if signature.normalize_s().is_some() {
        return Err(SignatureProblem::HighS);
    }
    Ok(signature)
}

/// Recovers the address that signed `payload.authorization` under `domain`.
pub fn recover_signer(payload: &ExactEvmPayload, domain: &Eip712Domain) -> Result<Address, SignatureProblem> {
    let signature = parse_signature(&payload.signature)?;
    let digest = payload.authorization.signing_hash(domain);
    signature
        .recover_address_from_prehash(&digest)
        .map_err(|e| SignatureProblem::Unrecoverable(e.to_string()))
}

/// Why a payment could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("requirement cannot be paid with exact/EVM: {0}")]
    Requirement(#[from] RequirementError),
    #[error("maxTimeoutSeconds is 0, the authorization would be expired when signed")]
    ZeroTimeout,
    #[error("validBefore overflows: now {now_unix_secs} + maxTimeoutSeconds {max_timeout_seconds}")]
    TimeOverflow {
        now_unix_secs: u64,
        max_timeout_seconds: u64,
    },
    #[error("signer failed: {0}")]
    Signer(#[from] SignerError),
    #[error("signer returned a signature that does not recover to its address {expected}: {problem}")]
    SignerMismatch { expected: Address, problem: String },
}

/// Builds and signs the EIP-3009 authorization for `req`:
/// `validAfter = now − 600`, `validBefore = now + maxTimeoutSeconds`, `value = amount`.
///
/// The caller supplies `now_unix_secs` and the 32-byte `nonce` (randomness stays outside this
/// function). The signature is checked to recover to `signer.address()` before it is
/// returned, so a misbehaving remote signer cannot produce an unpayable payment.
pub async fn sign_exact_evm<S: Signer>(
    req: &ExactEvmRequirement,
    signer: &S,
    now_unix_secs: u64,
    nonce: B256,
) -> Result<ExactEvmPayload, BuildError> {
    if req.max_timeout_seconds == 0 {
        return Err(BuildError::ZeroTimeout);
    }
    let valid_before = now_unix_secs
        .checked_add(req.max_timeout_seconds)
        .ok_or(BuildError::TimeOverflow {
            now_unix_secs,
            max_timeout_seconds: req.max_timeout_seconds,
        })?;
    let authorization = ExactEvmAuthorization {
        from: signer.address(),
        to: req.pay_to,
        value: req.amount,
        valid_after: now_unix_secs.saturating_sub(VALID_AFTER_BACKDATE_SECS),
        valid_before,
        nonce,
    };
    let domain = req.domain();
    let digest = authorization.signing_hash(&domain);
    let signature = signer.sign_digest(digest).await?;
    let payload = ExactEvmPayload {
        signature: signature.as_bytes().to_vec().into(),
        authorization,
    };
    match recover_signer(&payload, &domain) {
        Ok(recovered) if recovered == signer.address() => Ok(payload),
        Ok(recovered) => Err(BuildError::SignerMismatch {
            expected: signer.address(),
            problem: format!("recovers {recovered}"),
        }),
        Err(problem) => Err(BuildError::SignerMismatch {
            expected: signer.address(),
            problem: problem.to_string(),
        }),
    }
}

/// Builds a v1 `X-PAYMENT` payload for a chosen v1 requirement.
pub async fn build_payment_v1<S: Signer>(
    req: &PaymentRequirementsV1,
    signer: &S,
    now_unix_secs: u64,
    nonce: B256,
) -> Result<PaymentPayloadV1, BuildError> {
    let exact = ExactEvmRequirement::from_v1(req)?;
    let payload = sign_exact_evm(&exact, signer, now_unix_secs, nonce).await?;
    Ok(PaymentPayloadV1 {
        x402_version: X402Version::V1,
        scheme: req.scheme.clone(),
        network: req.network.clone(),
        payload,
    })
}

/// Builds a v2 `PAYMENT-SIGNATURE` payload for a chosen v2 requirement, echoing it as
/// `accepted` (unknown fields included). Pass the 402's `resource` and `extensions` to echo
/// them too.
pub async fn build_payment_v2<S: Signer>(
    accepted: &PaymentRequirementsV2,
    resource: Option<ResourceInfo>,
    extensions: Option<Value>,
    signer: &S,
    now_unix_secs: u64,
    nonce: B256,
) -> Result<PaymentPayloadV2, BuildError> {
    let exact = ExactEvmRequirement::from_v2(accepted)?;
    let payload = sign_exact_evm(&exact, signer, now_unix_secs, nonce).await?;
    Ok(PaymentPayloadV2 {
        x402_version: X402Version::V2,
        resource,
        accepted: accepted.clone(),
        payload,
        extensions,
    })
}

/// A payment that passed [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayment {
    pub version: X402Version,
    pub network: Network,
    pub asset: Address,
    /// Recovered signer, equal to `authorization.from`.
    pub payer: Address,
    pub pay_to: Address,
    /// Atomic units authorized.
    pub value: u128,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: B256,
    /// The signature as received (65 bytes, low-s).
    pub signature: Signature,
}

/// Why a payment was rejected. [`VerifyError::reason`] gives the x402 reason code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("payload is x402 v{payload}, requirements are v{requirements}")]
    VersionMismatch {
        payload: X402Version,
        requirements: X402Version,
    },
    #[error("payload scheme {payload:?} does not match required {required:?}")]
    SchemeMismatch { payload: String, required: String },
    #[error("payload network {payload:?} does not match required {required:?}")]
    NetworkMismatch { payload: String, required: String },
    #[error("requirements unusable: {0}")]
    Requirements(#[from] RequirementError),
    #[error("accepted requirement differs from the offered one in `{field}`")]
    AcceptedMismatch { field: &'static str },
    #[error("invalid signature: {0}")]
    InvalidSignature(SignatureProblem),
    #[error("signature recovers {recovered}, but authorization.from is {from}")]
    SignerMismatch { recovered: Address, from: Address },
    #[error("authorization pays {found}, requirement pays {expected}")]
    RecipientMismatch { expected: Address, found: Address },
    #[error("authorization value {found} is below the required {required}")]
    ValueInsufficient { required: u128, found: u128 },
    #[error("authorization value {found} differs from the required {required}")]
    ValueMismatch { required: u128, found: u128 },
    #[error("authorization not yet valid: validAfter {valid_after}, now {now_unix_secs}")]
    NotYetValid { valid_after: u64, now_unix_secs: u64 },
    #[error("authorization expired: validBefore {valid_before}, now {now_unix_secs}")]
    Expired { valid_before: u64, now_unix_secs: u64 },
}

impl VerifyError {
    /// The x402 reason code for this rejection.
    pub fn reason(&self) -> ErrorReason {
        match self {
            VerifyError::VersionMismatch { .. } => ErrorReason::InvalidX402Version,
            VerifyError::SchemeMismatch { .. } => ErrorReason::InvalidScheme,
            VerifyError::NetworkMismatch { .. } => ErrorReason::InvalidNetwork,
            VerifyError::Requirements(e) => e.reason(),
            VerifyError::AcceptedMismatch { .. } => ErrorReason::InvalidPaymentRequirements,
            VerifyError::InvalidSignature(_) | VerifyError::SignerMismatch { .. } => {
                ErrorReason::InvalidExactEvmPayloadSignature
            }
            VerifyError::RecipientMismatch { .. } => ErrorReason::InvalidExactEvmPayloadRecipientMismatch,
            VerifyError::ValueInsufficient { .. } => ErrorReason::InvalidExactEvmPayloadAuthorizationValue,
            VerifyError::ValueMismatch { .. } => ErrorReason::InvalidExactEvmPayloadAuthorizationValueMismatch,
            VerifyError::NotYetValid { .. } => ErrorReason::InvalidExactEvmPayloadAuthorizationValidAfter,
            VerifyError::Expired { .. } => ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore,
        }
    }
}

/// Checks that a v2 `accepted` echo names the same payment terms as the offered requirement.
fn check_accepted(accepted: &PaymentRequirementsV2, offered: &ExactEvmRequirement) -> Result<(), VerifyError> {
    if accepted.amount != offered.amount {
        return Err(VerifyError::AcceptedMismatch { field: "amount" });
    }
    if parse_evm_address(&accepted.asset) != Some(offered.asset) {
        return Err(VerifyError::AcceptedMismatch { field: "asset" });
    }
    if parse_evm_address(&accepted.pay_to) != Some(offered.pay_to) {
        return Err(VerifyError::AcceptedMismatch { field: "payTo" });
    }
    let extra = accepted.extra.as_ref();
    if domain_field(extra, "name").ok().as_deref() != Some(offered.domain_name.as_str()) {
        return Err(VerifyError::AcceptedMismatch { field: "extra.name" });
    }
    if domain_field(extra, "version").ok().as_deref() != Some(offered.domain_version.as_str()) {
        return Err(VerifyError::AcceptedMismatch { field: "extra.version" });
    }
    Ok(())
}

/// Facilitator-style verification of `payload` against the server's `requirements` at
/// `now_unix_secs` (no balance check and no nonce bookkeeping: those need chain state).
///
/// Checks, in order: protocol version, scheme, network, requirement validity, the v2
/// `accepted` echo, the EIP-712 signature (must recover `authorization.from`), recipient,
/// value (v1: at least `maxAmountRequired`; v2: exactly `amount`), and the validity window
/// with the token contract's rule `validAfter < now < validBefore`.
pub fn verify(
    payload: &PaymentPayload,
    requirements: &PaymentRequirements,
    now_unix_secs: u64,
) -> Result<VerifiedPayment, VerifyError> {
    if payload.version() != requirements.version() {
        return Err(VerifyError::VersionMismatch {
            payload: payload.version(),
            requirements: requirements.version(),
        });
    }
    let (required_scheme, required_network) = match requirements {
        PaymentRequirements::V1(r) => (&r.scheme, &r.network),
        PaymentRequirements::V2(r) => (&r.scheme, &r.network),
    };
    if payload.scheme() != required_scheme {
        return Err(VerifyError::SchemeMismatch {
            payload: payload.scheme().to_owned(),
            required: required_scheme.clone(),
        });
    }
    if payload.network() != required_network {
        return Err(VerifyError::NetworkMismatch {
            payload: payload.network().to_owned(),
            required: required_network.clone(),
        });
    }
    let offered = ExactEvmRequirement::from_requirements(requirements)?;
    if let PaymentPayload::V2(p) = payload {
        check_accepted(&p.accepted, &offered)?;
    }

    let evm = payload.exact_evm();
    let auth = &evm.authorization;
    let signature = parse_signature(&evm.signature).map_err(VerifyError::InvalidSignature)?;
    let recovered = signature
        .recover_address_from_prehash(&auth.signing_hash(&offered.domain()))
        .map_err(|e| VerifyError::InvalidSignature(SignatureProblem::Unrecoverable(e.to_string())))?;
    if recovered != auth.from {
        return Err(VerifyError::SignerMismatch {
            recovered,
            from: auth.from,
        });
    }
    if auth.to != offered.pay_to {
        return Err(VerifyError::RecipientMismatch {
            expected: offered.pay_to,
            found: auth.to,
        });
    }
    match offered.version {
        X402Version::V1 if auth.value < offered.amount => {
            return Err(VerifyError::ValueInsufficient {
                required: offered.amount,
                found: auth.value,
            });
        }
        X402Version::V2 if auth.value != offered.amount => {
            return Err(VerifyError::ValueMismatch {
                required: offered.amount,
                found: auth.value,
            });
        }
        _ => {}
    }
    if now_unix_secs <= auth.valid_after {
        return Err(VerifyError::NotYetValid {
            valid_after: auth.valid_after,
            now_unix_secs,
        });
    }
    if now_unix_secs >= auth.valid_before {
        return Err(VerifyError::Expired {
            valid_before: auth.valid_before,
            now_unix_secs,
        });
    }
    Ok(VerifiedPayment {
        version: offered.version,
        network: offered.network,
        asset: offered.asset,
        payer: recovered,
        pay_to: auth.to,
        value: auth.value,
        valid_after: auth.valid_after,
        valid_before: auth.valid_before,
        nonce: auth.nonce,
        signature,
    })
}
