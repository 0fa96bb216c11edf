//! The state every request shares ([`Shared`]) and the gateway's counters:
//! below both the HTTP layer (`server`) and the payment steps (`pay`).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::config::GatewayConfig;
use crate::keys::KeyRing;
use crate::ledger::Ledger;
use crate::policy::Guard;
use crate::wire::StatsView;

/// A counter for [`StatsView`].
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) fetches: Counter,
    pub(crate) payment_required: Counter,
    pub(crate) denials: Counter,
    pub(crate) signatures: Counter,
    pub(crate) payments_sent: Counter,
    pub(crate) captures: Counter,
    pub(crate) voids: Counter,
    pub(crate) unsettled: Counter,
}

impl Stats {
    pub(crate) fn view(&self) -> StatsView {
        StatsView {
            fetches: self.fetches.get(),
            payment_required: self.payment_required.get(),
            denials: self.denials.get(),
            signatures: self.signatures.get(),
            payments_sent: self.payments_sent.get(),
            captures: self.captures.get(),
            voids: self.voids.get(),
            unsettled: self.unsettled.get(),
        }
    }
}

/// Everything a request may use.
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    /// The ledger nodes without a token: the agent's calls add its session
    /// token ([`Ledger::with_token`]).
    pub(crate) ledger: Ledger,
    /// The ledger nodes with the gateway's own token: pin, capture, void,
    /// read holds.
    pub(crate) gateway_ledger: Ledger,
    /// Which upstreams may be fetched.
    pub(crate) guard: Guard,
    pub(crate) keys: KeyRing,
    pub(crate) stats: Stats,
    /// Set by [`crate::GatewayHandle::abort`]: every fetch stops where it is.
    pub(crate) aborted: watch::Receiver<bool>,
}
