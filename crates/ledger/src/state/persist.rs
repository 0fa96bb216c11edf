//! The state as records: encoding each one, all of them in order, the
//! digest over them, and rebuilding the state from them.

use sha2::{Digest, Sha256};

use crate::model::*;
use crate::records::{decode_value, encode_value, RecordError, RecordKey};
use crate::records::{KIND_BUDGET, KIND_HOLD, KIND_IDEMPOTENCY, KIND_META, KIND_SESSION};

use super::Ledger;

impl Ledger {
    /// The current value of a record, or `None` when the state no longer has
    /// it (the node then deletes it).
    pub fn encode_record(&self, key: &RecordKey) -> Option<Vec<u8>> {
        match key {
            RecordKey::Meta => Some(encode_value(&self.meta)),
            RecordKey::Budget(id) => self.budgets.get(id).map(encode_value),
            RecordKey::Session(id) => self.sessions.get(id).map(encode_value),
            RecordKey::Hold(id) => self.holds.get(id).map(encode_value),
            RecordKey::Idempotency(k) => self.idempotency.get(k).map(encode_value),
        }
    }

    /// Every record, in a fixed order. Persisting all of them and loading
    /// them back gives the same state.
    pub fn records(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        let meta = std::iter::once((RecordKey::Meta.encode(), encode_value(&self.meta)));
        let budgets = self
            .budgets
            .iter()
            .map(|(id, b)| (RecordKey::Budget(id.clone()).encode(), encode_value(b)));
        let sessions = self
            .sessions
            .iter()
            .map(|(id, s)| (RecordKey::Session(id.clone()).encode(), encode_value(s)));
        let holds = self
            .holds
            .iter()
            .map(|(id, h)| (RecordKey::Hold(*id).encode(), encode_value(h)));
        let keys = self
            .idempotency
            .iter()
            .map(|(k, r)| (RecordKey::Idempotency(k.clone()).encode(), encode_value(r)));
        meta.chain(budgets).chain(sessions).chain(holds).chain(keys)
    }

    /// SHA-256 over every record. Replicas that applied the same log have the
    /// same digest; the history chain head in the meta record covers
    /// resolved holds and receipts too.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for (key, value) in self.records() {
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(&key);
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(&value);
        }
        hasher.finalize().into()
    }

    /// Rebuilds the state from records (any order), including the derived
    /// indexes, and checks its invariants.
    pub fn from_records<I, K, V>(records: I) -> Result<Ledger, RecordError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut ledger = Ledger::new();
        for (key, value) in records {
            let (key, value) = (key.as_ref(), value.as_ref());
            let Some((&kind, rest)) = key.split_first() else {
                return Err(RecordError::UnknownKey { key: key.to_vec() });
            };
            let mismatch = || RecordError::Mismatch { key: key.to_vec() };
            match kind {
                KIND_META => ledger.meta = decode_value::<Meta>(key, value)?,
                KIND_BUDGET => {
                    let b: Budget = decode_value(key, value)?;
                    if b.id.as_str().as_bytes() != rest {
                        return Err(mismatch());
                    }
                    ledger.budgets.insert(b.id.clone(), b);
                }
                KIND_SESSION => {
                    let s: Session = decode_value(key, value)?;
                    if s.id.as_str().as_bytes() != rest {
                        return Err(mismatch());
                    }
                    ledger.by_token.insert(s.token_hash, s.id.clone());
                    ledger.sessions.insert(s.id.clone(), s);
                }
                KIND_HOLD => {
                    let h: Hold = decode_value(key, value)?;
                    if h.id.0.to_be_bytes() != rest {
                        return Err(mismatch());
                    }
                    if h.settling.is_none() {
                        ledger.hold_deadlines.insert((h.expires_at_ms, h.id));
                    }
                    let live = ledger.live_per_session.entry(h.session_id.clone()).or_default();
                    *live = live.saturating_add(1);
                    ledger.holds.insert(h.id, h);
                }
                KIND_IDEMPOTENCY => {
                    let k: ScopedKey = postcard::from_bytes(rest).map_err(|source| RecordError::Decode {
                        key: key.to_vec(),
                        source,
                    })?;
                    let r: IdempotencyRecord = decode_value(key, value)?;
                    ledger.key_deadlines.insert((r.expires_at_ms, k.clone()));
                    ledger.idempotency.insert(k, r);
                }
                _ => return Err(RecordError::UnknownKey { key: key.to_vec() }),
            }
        }
        ledger.check_invariants().map_err(RecordError::Invariant)?;
        Ok(ledger)
    }
}
