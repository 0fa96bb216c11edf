//! The client side of the correctness check: what each account was
//! approved for, so that after a run the peer's stored spend can be
//! compared with it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::workload::AccountSet;

/// Mismatches a verification lists at most.
const MISMATCHES_LISTED_MAX: usize = 10;

/// Per account: atomic units approved, and atomic units whose outcome is
/// unknown (the request failed after it may have been applied).
#[derive(Debug)]
pub struct Tracker {
    approved: Vec<AtomicU64>,
    unknown: Vec<AtomicU64>,
}

/// What a peer reports for one account after a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredAccount {
    pub cap_atomic: u64,
    /// Spent, plus (for spendcap) still held.
    pub used_atomic: u64,
}

/// The result of comparing a peer's stored state with the tracker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub set: String,
    pub accounts: usize,
    pub ok: bool,
    pub approved_total_atomic: u64,
    pub stored_total_atomic: u64,
    pub unknown_total_atomic: u64,
    pub mismatches: Vec<String>,
}

impl Tracker {
    pub fn new(accounts: usize) -> Self {
        Self {
            approved: (0..accounts).map(|_| AtomicU64::new(0)).collect(),
            unknown: (0..accounts).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn approved(&self, account: usize, amount_atomic: u64) {
        if let Some(a) = self.approved.get(account) {
            a.fetch_add(amount_atomic, Ordering::Relaxed);
        }
    }

    pub fn unknown(&self, account: usize, amount_atomic: u64) {
        if let Some(a) = self.unknown.get(account) {
            a.fetch_add(amount_atomic, Ordering::Relaxed);
        }
    }

    /// Every account must satisfy `used <= cap` and
    /// `approved <= used <= approved + unknown`; with no unknown outcomes
    /// that is `used == approved` exactly.
    pub fn verify(&self, set: &AccountSet, stored: &[Option<StoredAccount>]) -> Verification {
        let mut v = Verification {
            set: set.name.clone(),
            accounts: set.count,
            ok: true,
            ..Verification::default()
        };
        let note = |v: &mut Verification, text: String| {
            v.ok = false;
            if v.mismatches.len() < MISMATCHES_LISTED_MAX {
                v.mismatches.push(text);
            }
        };
        if stored.len() != set.count {
            note(
                &mut v,
                format!("peer returned {} of {} accounts", stored.len(), set.count),
            );
        }
        for index in 0..set.count {
            let approved = self.approved[index].load(Ordering::Relaxed);
            let unknown = self.unknown[index].load(Ordering::Relaxed);
            v.approved_total_atomic += approved;
            v.unknown_total_atomic += unknown;
            let key = set.key(index);
            let Some(Some(account)) = stored.get(index) else {
                note(&mut v, format!("{key}: missing from the peer"));
                continue;
            };
            v.stored_total_atomic += account.used_atomic;
            if account.cap_atomic != set.cap_atomic {
                note(
                    &mut v,
                    format!("{key}: cap {} != {}", account.cap_atomic, set.cap_atomic),
                );
            }
            if account.used_atomic > account.cap_atomic {
                note(
                    &mut v,
                    format!(
                        "{key}: spent {} exceeds cap {}",
                        account.used_atomic, account.cap_atomic
                    ),
                );
            }
            if account.used_atomic < approved || account.used_atomic > approved + unknown {
                note(
                    &mut v,
                    format!(
                        "{key}: spent {} but approved {} (+{} unknown)",
                        account.used_atomic, approved, unknown
                    ),
                );
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(cap: u64, used: u64) -> Option<StoredAccount> {
        Some(StoredAccount {
            cap_atomic: cap,
            used_atomic: used,
        })
    }

    #[test]
    fn exact_match_passes() {
        let set = AccountSet::new("s", 2, 100);
        let t = Tracker::new(2);
        t.approved(0, 30);
        t.approved(0, 40);
        let v = t.verify(&set, &[stored(100, 70), stored(100, 0)]);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.approved_total_atomic, 70);
        assert_eq!(v.stored_total_atomic, 70);
    }

    #[test]
    fn lost_or_phantom_spend_fails() {
        let set = AccountSet::new("s", 2, 100);
        let t = Tracker::new(2);
        t.approved(1, 50);
        assert!(!t.verify(&set, &[stored(100, 0), stored(100, 40)]).ok);
        assert!(!t.verify(&set, &[stored(100, 10), stored(100, 50)]).ok);
        assert!(!t.verify(&set, &[stored(100, 0), None]).ok);
        assert!(!t.verify(&set, &[stored(100, 0)]).ok);
    }

    #[test]
    fn unknown_outcomes_widen_the_window_but_not_the_cap() {
        let set = AccountSet::new("s", 1, 100);
        let t = Tracker::new(1);
        t.approved(0, 50);
        t.unknown(0, 50);
        assert!(t.verify(&set, &[stored(100, 50)]).ok);
        assert!(t.verify(&set, &[stored(100, 100)]).ok);
        assert!(!t.verify(&set, &[stored(100, 101)]).ok);
        assert!(!t.verify(&set, &[stored(90, 50)]).ok);
    }
}
