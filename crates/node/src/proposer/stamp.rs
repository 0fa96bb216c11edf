//! Stamping: the one place that reads the wall clock for log time.
//!
//! The leader stamps each entry it proposes with [`Stamper::stamp_entry`]:
//! its wall clock ([`now_ms`]), bounded by the pure [`ClockPolicy`] against
//! the monotonic time since this process started (see `crate::clock`). The
//! ledger never reads a clock; `tests/clock_reads.rs` keeps other wall-clock
//! reads out of the node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::clock::{ClockPolicy, Stamp};

/// This node's wall clock, Unix milliseconds. The leader stamps entries with
/// it as far as the clock policy allows ([`Stamper::stamp_now`]). Apply
/// never reads a clock; the ledger keeps time monotonic even if this one
/// jumps back.
pub fn now_ms() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    #[cfg(feature = "fault-injection")]
    let wall = wall.saturating_add_signed(crate::fault::clock_offset_ms());
    wall
}

/// The leader's stamp: the wall clock as far as the clock policy allows,
/// with the metrics and warnings that go with a clamped stamp.
pub struct Stamper {
    skew_max_ms: u64,
    policy: Mutex<ClockPolicy>,
    /// Monotonic zero of the clock policy.
    start: Instant,
    /// Whether the last stamp was clamped (to log the change once).
    clamping: AtomicBool,
}

impl Stamper {
    /// Starts the monotonic clock now; `log_at_start_ms` is the log time of
    /// the state loaded at start.
    pub fn start(skew_max_ms: u64, log_at_start_ms: u64) -> Stamper {
        let policy = ClockPolicy::new(skew_max_ms, now_ms(), log_at_start_ms);
        metrics::counter!(api::metrics::CLOCK_CLAMPED_TOTAL).increment(0);
        metrics::gauge!(api::metrics::CLOCK_WALL_AHEAD_SECONDS).set(0.0);
        Stamper {
            skew_max_ms,
            policy: Mutex::new(policy),
            start: Instant::now(),
            clamping: AtomicBool::new(false),
        }
    }

    pub fn skew_max_ms(&self) -> u64 {
        self.skew_max_ms
    }

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn policy(&self) -> std::sync::MutexGuard<'_, ClockPolicy> {
        // The policy is plain data updated in one call: a panic elsewhere
        // cannot leave it half-changed.
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The time an entry proposed now would carry: the wall clock, bounded
    /// by the clock policy. Reads the clocks, records nothing.
    pub fn stamp_now(&self) -> Stamp {
        let wall = now_ms();
        #[cfg(feature = "fault-injection")]
        if crate::fault::clock_unbounded() {
            return Stamp {
                time_ms: wall,
                clamped_by_ms: 0,
            };
        }
        let mono = self.mono_ms();
        self.policy().stamp(wall, mono)
    }

    /// Stamps an entry about to be proposed here, with metrics.
    pub fn stamp_entry(&self) -> u64 {
        let stamp = self.stamp_now();
        self.policy().stamped(stamp.time_ms);
        metrics::gauge!(api::metrics::CLOCK_WALL_AHEAD_SECONDS).set(stamp.clamped_by_ms as f64 / 1000.0);
        let clamped = stamp.clamped_by_ms > 0;
        if clamped {
            metrics::counter!(api::metrics::CLOCK_CLAMPED_TOTAL).increment(1);
        }
        let was = self.clamping.swap(clamped, Ordering::Relaxed);
        if clamped && !was {
            tracing::warn!(
                ahead_ms = stamp.clamped_by_ms,
                skew_max_ms = self.skew_max_ms,
                "this leader's wall clock is ahead of real time as it can vouch for it; \
                 log time is bounded (check NTP)"
            );
        } else if was && !clamped {
            tracing::info!("this leader's wall clock is within the allowed skew again");
        }
        stamp.time_ms
    }

    /// A follower saw log time `log_ms` (the ledger's time now).
    pub fn observe_log_time(&self, log_ms: u64) {
        let mono = self.mono_ms();
        self.policy().observe(log_ms, mono);
    }
}
