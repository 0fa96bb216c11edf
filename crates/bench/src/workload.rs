//! The four workloads, the accounts they draw on, and how each operation
//! picks its account.
//!
//! An "account" is whatever a peer checks a cap against: a spendcap
//! session, a PostgreSQL row, a Redis hash, an etcd key.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::money::{cents, dollars};

/// Cap of the single hot account: large enough never to deny.
pub const HOT_CAP_ATOMIC: u64 = dollars(1_000_000_000);
/// Cap of each spread (and batch) account: large enough never to deny.
pub const SPREAD_CAP_ATOMIC: u64 = dollars(1_000_000);
/// Cap of each seed session.
pub const SEED_CAP_ATOMIC: u64 = dollars(25);
/// What one seed call asks for: the third call on a session is denied.
pub const SEED_AMOUNT_ATOMIC: u64 = dollars(10);
/// What one hot, spread or batch authorization asks for.
pub const SMALL_AMOUNT_ATOMIC: u64 = cents(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// One account with a huge cap; every client hits it.
    Hot,
    /// Many accounts, picked uniformly.
    Spread,
    /// Many $25 sessions, $10 calls: each session approves two, then denies.
    Seed,
    /// Many authorizations per request, spread over many accounts.
    Batch,
}

impl Workload {
    pub const ALL: [Workload; 4] = [Self::Hot, Self::Spread, Self::Seed, Self::Batch];

    pub fn name(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::Spread => "spread",
            Self::Seed => "seed",
            Self::Batch => "batch",
        }
    }

    pub fn amount_atomic(self) -> u64 {
        match self {
            Self::Seed => SEED_AMOUNT_ATOMIC,
            Self::Hot | Self::Spread | Self::Batch => SMALL_AMOUNT_ATOMIC,
        }
    }
}

/// A named group of accounts that one peer holds; account `i` is called
/// `"{name}-{i}"` in every peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSet {
    pub name: String,
    pub count: usize,
    pub cap_atomic: u64,
}

impl AccountSet {
    pub fn new(name: impl Into<String>, count: usize, cap_atomic: u64) -> Self {
        Self {
            name: name.into(),
            count,
            cap_atomic,
        }
    }

    pub fn key(&self, index: usize) -> String {
        format!("{}-{}", self.name, index)
    }

    /// The index of a key of this set, if it is one.
    pub fn index_of(&self, key: &str) -> Option<usize> {
        let rest = key.strip_prefix(self.name.as_str())?.strip_prefix('-')?;
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let index: usize = rest.parse().ok()?;
        (index < self.count).then_some(index)
    }
}

/// How an operation picks its account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Picker {
    /// Always account 0.
    Single,
    /// Uniformly among `count` accounts.
    Uniform { count: usize },
    /// Deterministic: every session gets `calls_per_session` calls, spread
    /// over a window of `window` sessions at a time so that concurrent calls
    /// rarely share a session; sessions are used up in order and reused
    /// (fully denied) once all of them are.
    Sequential {
        count: usize,
        window: usize,
        calls_per_session: u64,
    },
}

impl Picker {
    /// `op_number` is the operation's place in the run (from one counter
    /// shared by all workers).
    pub fn pick(&self, op_number: u64, rng: &mut impl Rng) -> usize {
        match *self {
            Self::Single => 0,
            Self::Uniform { count } => rng.random_range(0..count.max(1)),
            Self::Sequential {
                count,
                window,
                calls_per_session,
            } => {
                let window = window.clamp(1, count.max(1)) as u64;
                let per_generation = window * calls_per_session.max(1);
                let generation = op_number / per_generation;
                let within = op_number % per_generation % window;
                ((generation * window + within) % count.max(1) as u64) as usize
            }
        }
    }
}

/// One operation counter shared by the workers of a run.
#[derive(Debug, Default)]
pub struct OpCounter(AtomicU64);

impl OpCounter {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::SmallRng, SeedableRng};

    use super::*;

    #[test]
    fn keys_round_trip() {
        let set = AccountSet::new("seed-r3", 10, SEED_CAP_ATOMIC);
        assert_eq!(set.key(7), "seed-r3-7");
        assert_eq!(set.index_of("seed-r3-7"), Some(7));
        assert_eq!(set.index_of("seed-r3-10"), None);
        assert_eq!(set.index_of("seed-r3-"), None);
        assert_eq!(set.index_of("seed-r31-1"), None);
        assert_eq!(set.index_of("spread-1"), None);
    }

    #[test]
    fn sequential_gives_each_session_its_calls() {
        let picker = Picker::Sequential {
            count: 100,
            window: 10,
            calls_per_session: 4,
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let mut calls = vec![0u32; 100];
        for op in 0..400 {
            calls[picker.pick(op, &mut rng)] += 1;
        }
        assert!(calls.iter().all(|&c| c == 4), "{calls:?}");
        // Consecutive operations go to different sessions.
        assert_ne!(picker.pick(0, &mut rng), picker.pick(1, &mut rng));
        // Past the last session it wraps around.
        assert_eq!(picker.pick(400, &mut rng), 0);
    }

    #[test]
    fn uniform_stays_in_range() {
        let picker = Picker::Uniform { count: 3 };
        let mut rng = SmallRng::seed_from_u64(2);
        assert!((0..1000).all(|op| picker.pick(op, &mut rng) < 3));
        assert_eq!(Picker::Single.pick(5, &mut rng), 0);
    }
}
