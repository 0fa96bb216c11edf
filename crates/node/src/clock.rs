//! The leader's clock: what time it stamps on an entry.
//!
//! Log time (`Entry::time_ms`) expires holds, sessions and idempotency keys
//! on every replica, and the ledger never moves it backwards: one entry
//! stamped a year ahead would expire everything at once, for good. So the
//! leader does not trust its wall clock alone. It stamps
//!
//! ```text
//! min(wall_now, line(now) + clock_skew_max_ms)
//! ```
//!
//! where `line` is real time as this process can vouch for it with its
//! monotonic clock (which cannot jump): a log time known at a monotonic
//! instant, advanced by the monotonic time elapsed since. The process knows
//! two such points and takes the later line:
//!
//! - its start: `max(wall clock at start, log time loaded from disk)` at the
//!   start instant (a cluster restarted after an outage resumes at the wall
//!   clock, without waiting);
//! - the latest advance of log time it saw while it was a follower (entries
//!   another leader stamped), so a node whose clock was behind at start can
//!   still move time once it leads. The latest, not the highest: a log time
//!   an earlier leader pushed ahead (by up to the allowance) stops counting
//!   as soon as log time advances again at real speed, so allowances do not
//!   add up from term to term.
//!
//! Consequences: a wall clock that jumps ahead after the process started
//! moves log time by at most the real elapsed time plus the allowance,
//! however far it jumps; a wall clock behind log time does not move log time
//! at all (the ledger ignores stamps in the past), and once it is right again
//! log time catches up with it. Not covered: a process that *starts* with a
//! wrong wall clock (its start line is that clock); the skew metric and the
//! follower's warning show it.
//!
//! This type is pure (no clock reads): callers pass the wall time and the
//! monotonic milliseconds since the process's clock start.

/// The stamp for one entry and how much of the wall clock was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub time_ms: u64,
    /// How far the wall clock was ahead of what the policy allows (0 when
    /// the wall clock was used as is).
    pub clamped_by_ms: u64,
}

/// The stamping rule (see the module documentation).
#[derive(Clone, Debug)]
pub struct ClockPolicy {
    skew_max_ms: u64,
    /// The start line's value at monotonic 0.
    start_line_ms: i128,
    /// The line of the latest advance of log time seen while a follower,
    /// as its value at monotonic 0.
    observed_line_ms: Option<i128>,
    /// Log time last seen, so only advances count as observations.
    last_seen_log_ms: u64,
    /// The highest stamp this node made itself: seeing it again later (as a
    /// follower, after stepping down) says nothing about real time.
    own_stamp_max_ms: u64,
}

impl ClockPolicy {
    /// `wall_at_start_ms` and `log_at_start_ms` are read when the process's
    /// monotonic clock starts (monotonic 0).
    pub fn new(skew_max_ms: u64, wall_at_start_ms: u64, log_at_start_ms: u64) -> ClockPolicy {
        ClockPolicy {
            skew_max_ms,
            start_line_ms: i128::from(wall_at_start_ms.max(log_at_start_ms)),
            observed_line_ms: None,
            last_seen_log_ms: log_at_start_ms,
            own_stamp_max_ms: 0,
        }
    }

    pub fn skew_max_ms(&self) -> u64 {
        self.skew_max_ms
    }

    /// A follower saw log time `log_ms` at monotonic `mono_ms`. Only an
    /// advance counts (re-reading the same log time later would say nothing
    /// new). The node's own stamps do not count ([`ClockPolicy::stamped`]):
    /// a leader that fed them back would raise its own bound by the
    /// allowance at every term.
    pub fn observe(&mut self, log_ms: u64, mono_ms: u64) {
        if log_ms <= self.last_seen_log_ms {
            return;
        }
        self.last_seen_log_ms = log_ms;
        if log_ms <= self.own_stamp_max_ms {
            return;
        }
        self.observed_line_ms = Some(i128::from(log_ms) - i128::from(mono_ms));
    }

    /// The latest log time this process can vouch for at `mono_ms`, before
    /// the allowance.
    pub fn line_ms(&self, mono_ms: u64) -> u64 {
        let base = self
            .observed_line_ms
            .map_or(self.start_line_ms, |o| o.max(self.start_line_ms));
        clamp_u64(base + i128::from(mono_ms))
    }

    /// The highest stamp allowed at `mono_ms`.
    pub fn ceiling_ms(&self, mono_ms: u64) -> u64 {
        self.line_ms(mono_ms).saturating_add(self.skew_max_ms)
    }

    /// Records a stamp this node proposed.
    pub fn stamped(&mut self, time_ms: u64) {
        self.own_stamp_max_ms = self.own_stamp_max_ms.max(time_ms);
    }

    /// The stamp for an entry proposed now.
    pub fn stamp(&self, wall_ms: u64, mono_ms: u64) -> Stamp {
        let ceiling = self.ceiling_ms(mono_ms);
        if wall_ms <= ceiling {
            Stamp {
                time_ms: wall_ms,
                clamped_by_ms: 0,
            }
        } else {
            Stamp {
                time_ms: ceiling,
                clamped_by_ms: wall_ms - ceiling,
            }
        }
    }
}

fn clamp_u64(v: i128) -> u64 {
    if v <= 0 {
        0
    } else {
        u64::try_from(v).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
    const SKEW: u64 = 2_000;

    #[test]
    fn a_correct_clock_is_used_as_is() {
        let p = ClockPolicy::new(SKEW, T0, T0 - 5_000);
        for elapsed in [0, 1, 999, 60_000, 3_600_000] {
            let s = p.stamp(T0 + elapsed, elapsed);
            assert_eq!(
                s,
                Stamp {
                    time_ms: T0 + elapsed,
                    clamped_by_ms: 0
                }
            );
        }
        // A wall clock ahead by less than the allowance is used as is too.
        assert_eq!(p.stamp(T0 + 10_000 + SKEW, 10_000).time_ms, T0 + 10_000 + SKEW);
    }

    #[test]
    fn a_jump_of_a_year_moves_log_time_by_at_most_elapsed_plus_the_allowance() {
        let p = ClockPolicy::new(SKEW, T0, T0);
        for elapsed in [0u64, 1, 250, 10_000, 86_400_000] {
            let s = p.stamp(T0 + YEAR_MS + elapsed, elapsed);
            assert!(s.time_ms <= T0 + elapsed + SKEW, "{s:?} after {elapsed} ms");
            assert_eq!(s.time_ms, T0 + elapsed + SKEW);
            assert_eq!(s.clamped_by_ms, YEAR_MS - SKEW);
        }
    }

    #[test]
    fn a_clock_behind_log_time_stamps_the_past_and_catches_up_when_fixed() {
        // Log time loaded at start is ahead of the wall clock: the start
        // line is the log time, so the stamps stay the (behind) wall clock;
        // the ledger ignores them and log time does not move.
        let p = ClockPolicy::new(SKEW, T0 - 3_600_000, T0);
        assert_eq!(p.stamp(T0 - 3_600_000 + 5_000, 5_000).time_ms, T0 - 3_595_000);
        // The clock is put right 10 s later: log time catches up at once.
        assert_eq!(p.stamp(T0 + 10_000, 10_000).time_ms, T0 + 10_000);
        // A backward jump after start does not lower the bound either.
        let q = ClockPolicy::new(SKEW, T0, T0);
        assert_eq!(q.stamp(T0 - 3_600_000, 1_000).time_ms, T0 - 3_600_000);
        assert_eq!(q.stamp(T0 + 30_000, 30_000).time_ms, T0 + 30_000);
    }

    #[test]
    fn log_time_seen_as_a_follower_raises_a_line_that_started_behind() {
        // Started with the clock 10 min behind; the cluster's log time is
        // right and advances while this node follows.
        let behind = 600_000;
        let mut p = ClockPolicy::new(SKEW, T0 - behind, T0 - behind);
        p.observe(T0 + 1_000, 1_000);
        assert_eq!(p.line_ms(1_000), T0 + 1_000);
        // Its clock is fixed and it leads: it may move time with real time.
        assert_eq!(p.stamp(T0 + 5_000, 5_000).time_ms, T0 + 5_000);
        // Seeing the same log time again later changes nothing.
        p.observe(T0 + 1_000, 30_000);
        assert_eq!(p.line_ms(30_000), T0 + 30_000);
    }

    #[test]
    fn a_late_observation_never_lowers_the_line_below_the_start() {
        // Paused for 20 s, then it applies the backlog: old log times late.
        let mut p = ClockPolicy::new(SKEW, T0, T0);
        p.observe(T0 + 500, 20_000);
        assert_eq!(p.line_ms(20_000), T0 + 20_000);
    }

    #[test]
    fn allowances_pushed_by_earlier_leaders_do_not_add_up() {
        // Another leader (clock ahead) pushed log time 2 s ahead of real.
        let mut p = ClockPolicy::new(SKEW, T0, T0);
        p.observe(T0 + 1_000 + SKEW, 1_000);
        assert_eq!(p.ceiling_ms(1_000), T0 + 1_000 + 2 * SKEW);
        // Then log time advanced at real speed again (a leader with a right
        // clock): the pushed line no longer counts.
        p.observe(T0 + 10_000, 10_000);
        assert_eq!(p.ceiling_ms(10_000), T0 + 10_000 + SKEW);
        // This node's clock jumps now and it leads: only one allowance.
        assert_eq!(p.stamp(T0 + YEAR_MS, 12_000).time_ms, T0 + 12_000 + SKEW);
    }

    #[test]
    fn a_leader_that_steps_down_and_sees_its_own_stamps_gains_nothing() {
        let mut p = ClockPolicy::new(SKEW, T0, T0);
        let wall = T0 + YEAR_MS;
        let s = p.stamp(wall, 1_000);
        p.stamped(s.time_ms);
        assert_eq!(s.time_ms, T0 + 1_000 + SKEW);
        // It follows now and sees its own stamp applied, then leads again.
        p.observe(s.time_ms, 1_100);
        assert_eq!(p.stamp(wall, 5_000).time_ms, T0 + 5_000 + SKEW);
    }

    #[test]
    fn repeated_jumps_never_add_up() {
        let p = ClockPolicy::new(SKEW, T0, T0);
        let mut last = 0;
        // One stamp per millisecond for 10 s with the clock a day ahead.
        for elapsed in 0..10_000u64 {
            let s = p.stamp(T0 + 86_400_000 + elapsed, elapsed);
            assert!(s.time_ms >= last);
            last = s.time_ms;
        }
        assert_eq!(last, T0 + 9_999 + SKEW);
    }

    #[test]
    fn a_cluster_restarted_after_an_outage_resumes_at_the_wall_clock() {
        // Loaded log time is an hour old: the cluster was down for an hour.
        let p = ClockPolicy::new(SKEW, T0, T0 - 3_600_000);
        assert_eq!(p.stamp(T0 + 100, 100).time_ms, T0 + 100);
    }

    #[test]
    fn arithmetic_saturates_at_the_edges() {
        let p = ClockPolicy::new(u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(p.ceiling_ms(u64::MAX), u64::MAX);
        let q = ClockPolicy::new(0, 0, 0);
        assert_eq!(
            q.stamp(u64::MAX, 0),
            Stamp {
                time_ms: 0,
                clamped_by_ms: u64::MAX
            }
        );
    }
}
