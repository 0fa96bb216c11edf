//! The state as key/value records: the keys and the value encoding the node
//! persists, snapshots and loads back (the state's side, including the
//! digest replicas compare, is in `state::persist`).
//!
//! Keys sort by kind, then id; values are postcard with a leading format
//! version byte so the on-disk format can evolve.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::ids::{BudgetId, HoldId, SessionId};
use crate::model::{Hold, Receipt, ScopedKey};

/// Version byte in front of every encoded record.
/// Version 2: sessions carry `tools` and `live_holds_max`, budgets
/// `blocked_tools` (records of version 1 are refused, not misread).
pub const RECORD_FORMAT_VERSION: u8 = 2;

pub(crate) const KIND_META: u8 = b'M';
pub(crate) const KIND_BUDGET: u8 = b'B';
pub(crate) const KIND_SESSION: u8 = b'S';
pub(crate) const KIND_HOLD: u8 = b'H';
pub(crate) const KIND_IDEMPOTENCY: u8 = b'I';

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

pub(crate) fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT_VERSION];
    // postcard encodes plain data into a Vec without failing; were it ever
    // to, the value would be empty on every replica alike (and fail to
    // decode on load, which stops the replica rather than guessing).
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    out
}

pub(crate) fn decode_value<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, RecordError> {
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
/// memory), and the history hash chain in [`Meta`](crate::model::Meta) covers them.
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
