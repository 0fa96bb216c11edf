//! The state as key/value records: how the node persists it, snapshots it,
//! loads it back, and how replicas compare it (the digest).
//!
//! Keys sort by kind, then id; values are postcard with a leading format
//! version byte so the on-disk format can evolve.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{BudgetId, HoldId, SessionId};
use crate::state::{Budget, Hold, IdempotencyRecord, Ledger, Meta, Receipt, ScopedKey, Session};

/// Version byte in front of every encoded record.
/// Version 2: sessions carry `tools` and `live_holds_max`, budgets
/// `blocked_tools` (records of version 1 are refused, not misread).
pub const RECORD_FORMAT_VERSION: u8 = 2;

const KIND_META: u8 = b'M';
const KIND_BUDGET: u8 = b'B';
const KIND_SESSION: u8 = b'S';
const KIND_HOLD: u8 = b'H';
const KIND_IDEMPOTENCY: u8 = b'I';

/// Names one record of the state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKey {
    Meta,
    Budget(BudgetId),
    Session(SessionId),
    Hold(HoldId),
    Idempotency(ScopedKey),
}

/// A record that could not be read back: the replica must stop rather than
/// answer from a state it cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record key {key:?} is not one the ledger writes")]
    UnknownKey { key: Vec<u8> },
    #[error("record {key:?} has format version {found}, this build reads {RECORD_FORMAT_VERSION}")]
    Version { key: Vec<u8>, found: u8 },
    #[error("record {key:?} does not decode: {source}")]
    Decode { key: Vec<u8>, source: postcard::Error },
    #[error("record {key:?} disagrees with its key")]
    Mismatch { key: Vec<u8> },
    #[error("the state's records break an invariant: {0}")]
    Invariant(String),
}

fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT_VERSION];
    // postcard encodes plain data into a Vec without failing; were it ever
    // to, the value would be empty on every replica alike (and fail to
    // decode on load, which stops the replica rather than guessing).
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    out
}

fn decode_value<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, RecordError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(RecordError::Version {
            key: key.to_vec(),
            found: 0,
        });
    };
    if version != RECORD_FORMAT_VERSION {
        return Err(RecordError::Version {
            key: key.to_vec(),
            found: version,
        });
    }
    postcard::from_bytes(body).map_err(|source| RecordError::Decode {
        key: key.to_vec(),
        source,
    })
}

impl RecordKey {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            RecordKey::Meta => vec![KIND_META],
            RecordKey::Budget(id) => [&[KIND_BUDGET][..], id.as_str().as_bytes()].concat(),
            RecordKey::Session(id) => [&[KIND_SESSION][..], id.as_str().as_bytes()].concat(),
            RecordKey::Hold(id) => [&[KIND_HOLD][..], &id.0.to_be_bytes()].concat(),
            RecordKey::Idempotency(k) => {
                let mut out = vec![KIND_IDEMPOTENCY];
                // Cannot fail for plain data (see `encode_value`).
                out.extend(postcard::to_allocvec(k).unwrap_or_default());
                out
            }
        }
    }
}

/// Records that leave the live state and are kept for audit: resolved holds
/// and receipts. The node stores them apart (they are not loaded into
/// memory), and the history hash chain in [`Meta`] covers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryRecord {
    Hold(Hold),
    Receipt(Receipt),
}

impl HistoryRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode_value(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<HistoryRecord, RecordError> {
        decode_value(b"history", bytes)
    }
}

pub fn decode_hold(bytes: &[u8]) -> Result<Hold, RecordError> {
    match HistoryRecord::decode(bytes)? {
        HistoryRecord::Hold(h) => Ok(h),
        HistoryRecord::Receipt(_) => Err(RecordError::Mismatch {
            key: b"history".to_vec(),
        }),
    }
}

pub fn decode_receipt(bytes: &[u8]) -> Result<Receipt, RecordError> {
    match HistoryRecord::decode(bytes)? {
        HistoryRecord::Receipt(r) => Ok(r),
        HistoryRecord::Hold(_) => Err(RecordError::Mismatch {
            key: b"history".to_vec(),
        }),
    }
}

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
