//! Payment nonces and the ledger keys derived from them.
//!
//! **Choice: the EIP-3009 nonce is deterministic in the agent's idempotency
//! key.** `nonce = keccak256("spendcap-gateway/x402-nonce/v1", session id,
//! wallet, agent key)` (each part length-prefixed). Every ledger key of the
//! payment is derived from the nonce, so a retried agent request:
//!
//! * authorizes with the same ledger key and gets the *first* hold back
//!   (the ledger is the persistent, replicated record; the gateway keeps
//!   none of its own, so a restarted or second gateway instance behaves the
//!   same);
//! * reads that hold's state: captured → `already_paid`; voided or expired
//!   → `previous_attempt_failed`; pinned (`settling`) → `payment_pending`,
//!   and nothing new is signed;
//! * and even if something signed again, it could only sign the *same*
//!   nonce, which the token contract accepts once per wallet: a second
//!   transfer is impossible on chain too.
//!
//! Requests without a key get a random nonce: each is a new payment.
//!
//! The nonce is public once used (it is on chain), and reveals nothing: the
//! hash input holds the session id, which outsiders do not know, and no
//! secret is needed to make it unique.

use x402::{Address, Network, B256};

const NONCE_DOMAIN: &[u8] = b"spendcap-gateway/x402-nonce/v1";

/// The nonce for a keyed request.
pub fn derive_nonce(session_id: &str, wallet: Address, agent_key: &str) -> B256 {
    let mut input = Vec::with_capacity(NONCE_DOMAIN.len() + session_id.len() + agent_key.len() + 40);
    for part in [
        NONCE_DOMAIN,
        session_id.as_bytes(),
        wallet.as_slice(),
        agent_key.as_bytes(),
    ] {
        input.extend_from_slice(&(part.len() as u32).to_be_bytes());
        input.extend_from_slice(part);
    }
    alloy_primitives::keccak256(&input)
}

/// A fresh nonce for a request without an idempotency key.
pub fn random_nonce() -> B256 {
    B256::from(rand::random::<[u8; 32]>())
}

fn nonce_hex(nonce: B256) -> String {
    hex::encode(nonce.as_slice())
}

/// The ledger idempotency key of the authorization (hold).
pub fn authorize_key(nonce: B256) -> String {
    format!("x402:{}", nonce_hex(nonce))
}

/// The ledger idempotency key of the capture.
pub fn capture_key(nonce: B256) -> String {
    format!("x402-capture:{}", nonce_hex(nonce))
}

/// The ledger idempotency key of the void.
pub fn void_key(nonce: B256) -> String {
    format!("x402-void:{}", nonce_hex(nonce))
}

/// The reference a hold is pinned with before its payment is sent:
/// `x402:<caip2>:<token>:<wallet>:<nonce>:<validBefore>:<attempt>`. It
/// carries what a reconciler needs to ask the chain whether the payment
/// happened (the token's `authorizationState(wallet, nonce)`) and from when
/// it can no longer happen (`validBefore`, Unix seconds, exactly as signed),
/// and a per-attempt part so two attempts can never both own the hold: the
/// ledger refuses a second pin with a different reference.
pub fn settling_reference(
    network: Network,
    token: Address,
    wallet: Address,
    nonce: B256,
    valid_before: u64,
    attempt: u64,
) -> String {
    format!(
        "x402:{}:{}:{}:0x{}:{valid_before}:{:016x}",
        network.caip2(),
        token.to_checksum(None),
        wallet.to_checksum(None),
        nonce_hex(nonce),
        attempt
    )
}

/// The parts of a [`settling_reference`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlingReference {
    /// CAIP-2, e.g. `eip155:84532`.
    pub network: String,
    pub token: Address,
    pub wallet: Address,
    pub nonce: B256,
    pub valid_before: u64,
}

/// Reads a reference written by [`settling_reference`]; `None` for anything
/// else (a hold pinned by hand, or by an older gateway without
/// `validBefore`).
pub fn parse_settling_reference(reference: &str) -> Option<SettlingReference> {
    let rest = reference.strip_prefix("x402:")?;
    let mut parts: Vec<&str> = rest.rsplitn(6, ':').collect();
    if parts.len() != 6 {
        return None;
    }
    parts.reverse();
    let [network, token, wallet, nonce, valid_before, attempt] = parts.as_slice() else {
        return None;
    };
    if attempt.len() != 16 || !attempt.bytes().all(|b| b.is_ascii_hexdigit()) || !network.contains(':') {
        return None;
    }
    let nonce = nonce.strip_prefix("0x")?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(nonce, &mut bytes).ok()?;
    Some(SettlingReference {
        network: network.to_string(),
        token: x402::exact_evm::parse_evm_address(token)?,
        wallet: x402::exact_evm::parse_evm_address(wallet)?,
        nonce: B256::from(bytes),
        valid_before: valid_before.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_deterministic_and_scoped() {
        let w1 = Address::repeat_byte(1);
        let w2 = Address::repeat_byte(2);
        let a = derive_nonce("ses_1", w1, "call-1");
        assert_eq!(a, derive_nonce("ses_1", w1, "call-1"));
        assert_ne!(a, derive_nonce("ses_2", w1, "call-1"));
        assert_ne!(a, derive_nonce("ses_1", w2, "call-1"));
        assert_ne!(a, derive_nonce("ses_1", w1, "call-2"));
        // Length prefixes keep part boundaries apart.
        assert_ne!(derive_nonce("ab", w1, "c"), derive_nonce("a", w1, "bc"));
        assert_ne!(random_nonce(), random_nonce());
    }

    #[test]
    fn keys_and_references_fit_the_ledger() {
        let n = B256::repeat_byte(0xab);
        for key in [authorize_key(n), capture_key(n), void_key(n)] {
            assert!(key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic()), "{key}");
        }
        assert_ne!(authorize_key(n), capture_key(n));
        let r = settling_reference(
            Network::AvalancheFuji,
            Address::ZERO,
            Address::ZERO,
            n,
            u64::MAX,
            u64::MAX,
        );
        assert!(r.len() <= 256, "{}", r.len());
        assert_ne!(
            r,
            settling_reference(Network::AvalancheFuji, Address::ZERO, Address::ZERO, n, u64::MAX, 1)
        );
    }

    #[test]
    fn references_parse_back() {
        let n = B256::repeat_byte(0xcd);
        let w = Address::repeat_byte(7);
        let t = Address::repeat_byte(9);
        let r = settling_reference(Network::BaseSepolia, t, w, n, 1_740_672_154, 42);
        let parsed = parse_settling_reference(&r).unwrap();
        assert_eq!(parsed.network, "eip155:84532");
        assert_eq!((parsed.token, parsed.wallet, parsed.nonce), (t, w, n));
        assert_eq!(parsed.valid_before, 1_740_672_154);
        // The format before validBefore was added, and hand-made ones.
        assert!(parse_settling_reference(&format!(
            "x402:eip155:84532:{t}:{w}:0x{}:{:016x}",
            hex::encode(n.as_slice()),
            1
        ))
        .is_none());
        assert!(parse_settling_reference("manual: checked by Ann").is_none());
    }
}
