//! History: resolved holds and receipts, kept for audit and not loaded into
//! memory. Receipts have indexes by session, agent, tool and time.

use ledger::{Hold, HoldId, Receipt, ReceiptId};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::db::{Store, StoreError, CF_HISTORY};

const HOLD: u8 = b'h';
const RECEIPT: u8 = b'r';
const BY_SESSION: &[u8] = b"is";
const BY_AGENT: &[u8] = b"ia";
const BY_TOOL: &[u8] = b"it";
const BY_TIME: &[u8] = b"im";

/// Most receipts one query returns.
pub const RECEIPTS_PAGE_MAX: usize = 1000;

fn hold_key(id: HoldId) -> Vec<u8> {
    [&[HOLD][..], &id.0.to_be_bytes()].concat()
}

fn receipt_key(id: ReceiptId) -> Vec<u8> {
    [&[RECEIPT][..], &id.0.to_be_bytes()].concat()
}

/// Index prefix for one value: `tag ‖ value ‖ 0x00` (values never contain
/// NUL: the ledger's names forbid control characters).
fn index_prefix(tag: &[u8], value: &str) -> Vec<u8> {
    [tag, value.as_bytes(), &[0]].concat()
}

/// Adds a history record (as the ledger encoded it) and its indexes to a batch.
pub(crate) fn put(batch: &mut WriteBatch, store: &Store, record: &ledger::HistoryRecord) {
    let cf = store.cf(CF_HISTORY);
    let bytes = record.encode();
    match record {
        ledger::HistoryRecord::Hold(h) => batch.put_cf(cf, hold_key(h.id), bytes),
        ledger::HistoryRecord::Receipt(r) => {
            let id = r.id.0.to_be_bytes();
            batch.put_cf(cf, receipt_key(r.id), bytes);
            batch.put_cf(
                cf,
                [index_prefix(BY_SESSION, r.session_id.as_str()), id.to_vec()].concat(),
                [],
            );
            batch.put_cf(cf, [index_prefix(BY_AGENT, &r.agent_id), id.to_vec()].concat(), []);
            batch.put_cf(cf, [index_prefix(BY_TOOL, r.tool.as_str()), id.to_vec()].concat(), []);
            batch.put_cf(cf, [BY_TIME, &r.timestamp_ms.to_be_bytes(), &id].concat(), []);
        }
    }
}

/// Which receipts to list.
#[derive(Clone, Debug, Default)]
pub struct ReceiptFilter {
    pub session_id: Option<String>,
    pub agent_id: Option<String>,
    pub tool: Option<String>,
    /// Inclusive.
    pub from_ms: Option<u64>,
    /// Exclusive.
    pub to_ms: Option<u64>,
    /// Start after this receipt.
    pub after: Option<ReceiptId>,
    pub limit: usize,
}

impl ReceiptFilter {
    fn matches(&self, r: &Receipt) -> bool {
        self.session_id.as_deref().is_none_or(|s| s == r.session_id.as_str())
            && self.agent_id.as_deref().is_none_or(|a| a == r.agent_id)
            && self.tool.as_deref().is_none_or(|t| t == r.tool.as_str())
            && self.from_ms.is_none_or(|f| r.timestamp_ms >= f)
            && self.to_ms.is_none_or(|t| r.timestamp_ms < t)
            && self.after.is_none_or(|a| r.id > a)
    }
}

impl Store {
    pub fn resolved_hold(&self, id: HoldId) -> Result<Option<Hold>, StoreError> {
        match self.db().get_cf(self.cf(CF_HISTORY), hold_key(id))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(ledger::records::decode_hold(&bytes)?)),
        }
    }

    pub fn receipt(&self, id: ReceiptId) -> Result<Option<Receipt>, StoreError> {
        match self.db().get_cf(self.cf(CF_HISTORY), receipt_key(id))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(ledger::records::decode_receipt(&bytes)?)),
        }
    }

    /// Receipts matching the filter, in id (= log time) order, at most
    /// `filter.limit` (capped at [`RECEIPTS_PAGE_MAX`]).
    pub fn receipts(&self, filter: &ReceiptFilter) -> Result<Vec<Receipt>, StoreError> {
        let limit = filter.limit.clamp(1, RECEIPTS_PAGE_MAX);
        let start_id = filter.after.map(|a| a.0.saturating_add(1)).unwrap_or(0).to_be_bytes();
        // Walk the narrowest index; the others are checked per receipt.
        let (prefix, start): (Vec<u8>, Vec<u8>) = if let Some(s) = &filter.session_id {
            let p = index_prefix(BY_SESSION, s);
            (p.clone(), [p, start_id.to_vec()].concat())
        } else if let Some(a) = &filter.agent_id {
            let p = index_prefix(BY_AGENT, a);
            (p.clone(), [p, start_id.to_vec()].concat())
        } else if let Some(t) = &filter.tool {
            let p = index_prefix(BY_TOOL, t);
            (p.clone(), [p, start_id.to_vec()].concat())
        } else if filter.from_ms.is_some() && filter.after.is_none() {
            let from = filter.from_ms.unwrap_or(0).to_be_bytes();
            (BY_TIME.to_vec(), [BY_TIME, &from[..]].concat())
        } else {
            (vec![RECEIPT], receipt_key(ReceiptId(u64::from_be_bytes(start_id))))
        };
        let mut out = Vec::new();
        let iter = self
            .db()
            .iterator_cf(self.cf(CF_HISTORY), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let receipt = if prefix == [RECEIPT] {
                ledger::records::decode_receipt(&value)?
            } else {
                let id_bytes: [u8; 8] = key[key.len() - 8..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("receipt index key".into()))?;
                let id = ReceiptId(u64::from_be_bytes(id_bytes));
                self.receipt(id)?
                    .ok_or_else(|| StoreError::Corrupt(format!("index names missing receipt {id}")))?
            };
            // Receipts are in log-time order: past `to`, nothing more matches.
            if filter.to_ms.is_some_and(|t| receipt.timestamp_ms >= t) {
                break;
            }
            if filter.matches(&receipt) {
                out.push(receipt);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}
