//! Signing abstraction for payer keys.
//!
//! [`Signer`] is async so a remote signer (KMS, HSM, wallet service) can implement it; the
//! returned future must be `Send` so payments can be built inside spawned tasks.
//! [`LocalKeySigner`] holds a secp256k1 key in memory.

use std::future::Future;

use alloy_primitives::{Address, Signature, B256};
use k256::ecdsa::SigningKey;
use k256::elliptic_curve::zeroize::Zeroizing;
use thiserror::Error;

/// Why a digest could not be signed or a key loaded.
#[derive(Debug, Error)]
pub enum SignerError {
    #[error("invalid private key: {0}")]
    InvalidKey(&'static str),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("remote signer failed: {0}")]
    Remote(String),
}

/// Something that signs 32-byte digests (EIP-712 signing hashes) for one address.
pub trait Signer: Send + Sync {
    /// The address whose key signs.
    fn address(&self) -> Address;

    /// Signs a prehashed digest, returning an Ethereum `(r, s, yParity)` signature.
    fn sign_digest(&self, digest: B256) -> impl Future<Output = Result<Signature, SignerError>> + Send;
}

/// A secp256k1 private key held in process memory. The key is wiped on drop (k256's
/// `SigningKey` zeroizes) and never printed: `Debug` shows only the address.
#[derive(Clone)]
pub struct LocalKeySigner {
    key: SigningKey,
    address: Address,
}

/// Length of a secp256k1 private key (bytes).
const PRIVATE_KEY_BYTES: usize = 32;

impl LocalKeySigner {
    /// Loads a key from 64 hex digits, with or without a `0x` prefix.
    pub fn from_hex(hex_key: &str) -> Result<Self, SignerError> {
        let trimmed = hex_key.trim();
        let digits = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        if digits.len() != PRIVATE_KEY_BYTES * 2 {
            return Err(SignerError::InvalidKey("expected 64 hex digits"));
        }
        let mut bytes = Zeroizing::new([0u8; PRIVATE_KEY_BYTES]);
        alloy_primitives::hex::decode_to_slice(digits, bytes.as_mut_slice())
            .map_err(|_| SignerError::InvalidKey("not hexadecimal"))?;
        Self::from_bytes(&bytes)
    }

    /// Loads a key from its 32 big-endian bytes (must be a valid non-zero scalar).
    pub fn from_bytes(bytes: &[u8; PRIVATE_KEY_BYTES]) -> Result<Self, SignerError> {
        let key = SigningKey::from_slice(bytes).map_err(|_| SignerError::InvalidKey("not a valid secp256k1 scalar"))?;
        let address = Address::from_private_key(&key);
        Ok(Self { key, address })
    }

    /// Signs synchronously (the local key needs no I/O).
    pub fn sign_digest_sync(&self, digest: B256) -> Result<Signature, SignerError> {
        // k256 returns a low-s signature with the matching recovery id.
        let (signature, recovery_id) = self
            .key
            .sign_prehash_recoverable(digest.as_slice())
            .map_err(|e| SignerError::Signing(e.to_string()))?;
        Ok(Signature::from((signature, recovery_id)))
    }
}

/// The object-safe form of [`Signer`] (its `impl Future` return keeps it from being a trait
/// object). Every [`Signer`] is a `DynSigner`; hold signers of different kinds (local keys,
/// a remote KMS) side by side as `Arc<dyn DynSigner>`, or as a [`SharedSigner`], which is a
/// [`Signer`] again.
pub trait DynSigner: Send + Sync {
    /// The address whose key signs (named apart from [`Signer::address`] so both traits can
    /// be in scope).
    fn signer_address(&self) -> Address;

    fn sign_digest_boxed(&self, digest: B256) -> BoxedSignFuture<'_>;
}

/// The future [`DynSigner::sign_digest_boxed`] returns.
pub type BoxedSignFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Signature, SignerError>> + Send + 'a>>;

impl<S: Signer> DynSigner for S {
    fn signer_address(&self) -> Address {
        Signer::address(self)
    }

    fn sign_digest_boxed(&self, digest: B256) -> BoxedSignFuture<'_> {
        Box::pin(Signer::sign_digest(self, digest))
    }
}

/// A cheaply clonable signer behind a trait object; implements [`Signer`], so it can be passed
/// to [`crate::build_payment_v1`] and friends.
#[derive(Clone)]
pub struct SharedSigner(std::sync::Arc<dyn DynSigner>);

impl SharedSigner {
    pub fn new(signer: impl DynSigner + 'static) -> Self {
        Self(std::sync::Arc::new(signer))
    }

    pub fn from_arc(signer: std::sync::Arc<dyn DynSigner>) -> Self {
        Self(signer)
    }
}

impl std::fmt::Debug for SharedSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSigner")
            .field("address", &self.0.signer_address())
            .finish_non_exhaustive()
    }
}

impl Signer for SharedSigner {
    fn address(&self) -> Address {
        self.0.signer_address()
    }

    fn sign_digest(&self, digest: B256) -> impl Future<Output = Result<Signature, SignerError>> + Send {
        self.0.sign_digest_boxed(digest)
    }
}

impl std::fmt::Debug for LocalKeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeySigner")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Signer for LocalKeySigner {
    fn address(&self) -> Address {
        self.address
    }

    async fn sign_digest(&self, digest: B256) -> Result<Signature, SignerError> {
        self.sign_digest_sync(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Well-known development key (Hardhat/Anvil account #0); never holds real funds.
    const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn loads_key_and_derives_address() {
        let signer = LocalKeySigner::from_hex(DEV_KEY).unwrap();
        assert_eq!(
            signer.address(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse::<Address>().unwrap()
        );
        let without_prefix = LocalKeySigner::from_hex(&DEV_KEY[2..]).unwrap();
        assert_eq!(without_prefix.address(), signer.address());
    }

    #[test]
    fn debug_never_prints_the_key() {
        let signer = LocalKeySigner::from_hex(DEV_KEY).unwrap();
        let printed = format!("{signer:?} {signer:#?}");
        assert!(!printed.to_lowercase().contains(&DEV_KEY[2..]));
        assert!(!printed.contains("ac0974"));
        assert!(printed.contains("LocalKeySigner"));
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(matches!(
            LocalKeySigner::from_hex("0x1234"),
            Err(SignerError::InvalidKey(_))
        ));
        let not_hex = format!("0x{}", "zz".repeat(32));
        assert!(matches!(
            LocalKeySigner::from_hex(&not_hex),
            Err(SignerError::InvalidKey(_))
        ));
        let zero = format!("0x{}", "00".repeat(32));
        assert!(matches!(
            LocalKeySigner::from_hex(&zero),
            Err(SignerError::InvalidKey(_))
        ));
        // Above the curve order.
        let too_big = format!("0x{}", "ff".repeat(32));
        assert!(matches!(
            LocalKeySigner::from_hex(&too_big),
            Err(SignerError::InvalidKey(_))
        ));
    }

    #[test]
    fn shared_signer_delegates_and_hides_the_key() {
        let local = LocalKeySigner::from_hex(DEV_KEY).unwrap();
        let shared = SharedSigner::new(local.clone());
        assert_eq!(Signer::address(&shared), local.address());
        let digest = alloy_primitives::keccak256(b"shared");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let sig = runtime.block_on(Signer::sign_digest(&shared, digest)).unwrap();
        assert_eq!(sig, local.sign_digest_sync(digest).unwrap());
        assert!(!format!("{shared:?}").contains("ac0974"));
    }

    #[test]
    fn signature_recovers_signer() {
        let signer = LocalKeySigner::from_hex(DEV_KEY).unwrap();
        let digest = alloy_primitives::keccak256(b"spendcap");
        let sig = signer.sign_digest_sync(digest).unwrap();
        assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), signer.address());
        assert!(sig.normalize_s().is_none(), "k256 signs low-s");
    }
}
