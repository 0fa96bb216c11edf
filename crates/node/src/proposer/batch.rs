//! When to cut a batch: the batching policy as a small pure state machine
//! (no async runtime, no clock reads: callers pass the time in), in the
//! style of openraft's `Engine`. The proposer's async loop asks it what to
//! do next ([`Batcher::step`]), does it, and reports back.
//!
//! The rule: a batch is gathered only while a slot is free (fewer than
//! `in_flight_max` batches proposed and not yet decided), so an idle node
//! proposes at once and a busy one proposes bigger batches (one fsync and
//! one replication round each). It takes queued groups until it holds
//! `commands_max` commands, or the queue is empty once `linger` has passed
//! since it opened. A group (one caller's commands) is never split: one that
//! does not fit starts the next batch, and one larger than `commands_max`
//! goes alone. Groups leave in the order they arrived.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The limits the batcher works to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Commands in one batch (at least 1). A larger group goes alone.
    pub commands_max: usize,
    /// How long an open batch waits for more groups once the queue is empty.
    pub linger: Duration,
    /// Batches proposed and not yet decided (at least 1).
    pub in_flight_max: usize,
}

/// What the loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// Nothing is being gathered: wait for a group to arrive
    /// ([`Batcher::offer`]).
    Receive,
    /// Every slot is taken: wait for a proposed batch to be decided
    /// ([`Batcher::finished`]). Arriving groups wait in the queue.
    AwaitDecided,
    /// A batch is open: offer the next queued group; if the queue is empty,
    /// wait for one until `until` and then report [`Batcher::ran_dry`].
    Take { until: Instant },
    /// Propose these groups as one entry, in this order. The batch counts
    /// as in flight until [`Batcher::finished`].
    Propose(Vec<T>),
}

struct Open<T> {
    groups: Vec<T>,
    commands: usize,
    opened_at: Instant,
    /// The queue was empty once the linger had passed.
    dry: bool,
}

/// The batching state: the batch being gathered, groups waiting for the
/// next one, and how many batches are in flight.
pub struct Batcher<T> {
    policy: BatchPolicy,
    in_flight: usize,
    open: Option<Open<T>>,
    /// Groups taken from the queue that did not fit the open batch (or came
    /// while no slot was free), with their command counts, oldest first.
    held: VecDeque<(T, usize)>,
}

impl<T> Batcher<T> {
    /// Limits of 0 are taken as 1 (a batcher that could never propose
    /// would hang every caller).
    pub fn new(policy: BatchPolicy) -> Batcher<T> {
        Batcher {
            policy: BatchPolicy {
                commands_max: policy.commands_max.max(1),
                in_flight_max: policy.in_flight_max.max(1),
                linger: policy.linger,
            },
            in_flight: 0,
            open: None,
            held: VecDeque::new(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// What to do at `now`.
    pub fn step(&mut self, now: Instant) -> Step<T> {
        if self.open.is_none() {
            if self.in_flight >= self.policy.in_flight_max {
                return Step::AwaitDecided;
            }
            let Some((group, commands)) = self.held.pop_front() else {
                return Step::Receive;
            };
            self.open = Some(Open {
                groups: vec![group],
                commands,
                opened_at: now,
                dry: false,
            });
        }
        let Some(open) = &self.open else {
            return Step::Receive;
        };
        let full = open.commands >= self.policy.commands_max || !self.held.is_empty();
        if full || open.dry {
            let groups = self.open.take().map(|o| o.groups).unwrap_or_default();
            self.in_flight += 1;
            return Step::Propose(groups);
        }
        Step::Take {
            until: self.linger_end(open.opened_at),
        }
    }

    fn linger_end(&self, opened_at: Instant) -> Instant {
        opened_at.checked_add(self.policy.linger).unwrap_or(opened_at)
    }

    /// A group of `commands` commands arrived at `now`: it joins the open
    /// batch if it fits, opens one if none is open and a slot is free, else
    /// waits for the next batch.
    pub fn offer(&mut self, group: T, commands: usize, now: Instant) {
        let max = self.policy.commands_max;
        let slot_free = self.in_flight < self.policy.in_flight_max;
        match &mut self.open {
            Some(open) if self.held.is_empty() && open.commands.saturating_add(commands) <= max => {
                open.groups.push(group);
                open.commands += commands;
            }
            None if self.held.is_empty() && slot_free => {
                self.open = Some(Open {
                    groups: vec![group],
                    commands,
                    opened_at: now,
                    dry: false,
                });
            }
            _ => self.held.push_back((group, commands)),
        }
    }

    /// The queue was empty at `now`. Once the linger has passed, the open
    /// batch is proposed as it is.
    pub fn ran_dry(&mut self, now: Instant) {
        let end = match &self.open {
            Some(open) => self.linger_end(open.opened_at),
            None => return,
        };
        if let Some(open) = &mut self.open {
            open.dry |= now >= end;
        }
    }

    /// A proposed batch was decided (or failed): its slot is free.
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(commands_max: usize, linger_ms: u64, in_flight_max: usize) -> BatchPolicy {
        BatchPolicy {
            commands_max,
            linger: Duration::from_millis(linger_ms),
            in_flight_max,
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Drives the batcher as the loop does with everything in `queue`
    /// already waiting, at time `now`, until it asks for more than the
    /// queue holds; returns the batches proposed.
    fn drain(
        b: &mut Batcher<&'static str>,
        queue: &mut VecDeque<(&'static str, usize)>,
        now: Instant,
    ) -> Vec<Vec<&'static str>> {
        let mut out = Vec::new();
        let mut told_dry = false;
        loop {
            match b.step(now) {
                Step::Propose(groups) => {
                    out.push(groups);
                    told_dry = false;
                }
                Step::Take { .. } => match queue.pop_front() {
                    Some((g, n)) => b.offer(g, n, now),
                    // Still lingering: the loop would wait now.
                    None if told_dry => return out,
                    None => {
                        b.ran_dry(now);
                        told_dry = true;
                    }
                },
                Step::Receive => match queue.pop_front() {
                    Some((g, n)) => b.offer(g, n, now),
                    None => return out,
                },
                Step::AwaitDecided => return out,
            }
        }
    }

    #[test]
    fn an_idle_batcher_proposes_the_first_group_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(10, 0, 2));
        assert_eq!(b.step(t0), Step::Receive);
        b.offer("a", 1, t0);
        assert_eq!(b.step(t0), Step::Take { until: t0 });
        b.ran_dry(t0);
        assert_eq!(b.step(t0), Step::Propose(vec!["a"]));
        assert_eq!(b.in_flight(), 1);
        assert_eq!(b.step(t0), Step::Receive);
    }

    #[test]
    fn a_full_batch_is_proposed_without_waiting_for_the_queue_to_empty() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(3, 1_000, 2));
        let mut q: VecDeque<_> = [("a", 1), ("b", 2), ("c", 1)].into();
        assert_eq!(b.step(t0), Step::Receive);
        let (g, n) = q.pop_front().unwrap();
        b.offer(g, n, t0);
        let (g, n) = q.pop_front().unwrap();
        b.offer(g, n, t0);
        // Three commands: full, although the linger has not passed.
        assert_eq!(b.step(t0), Step::Propose(vec!["a", "b"]));
        assert_eq!(drain(&mut b, &mut q, t0), Vec::<Vec<&str>>::new());
        assert!(matches!(b.step(t0), Step::Take { .. }));
    }

    #[test]
    fn a_group_is_never_split_and_order_is_kept() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(4, 0, 8));
        let mut q: VecDeque<_> = [("a", 3), ("b", 2), ("c", 2), ("d", 1), ("e", 4)].into();
        let batches = drain(&mut b, &mut q, t0);
        assert_eq!(batches, vec![vec!["a"], vec!["b", "c"], vec!["d"], vec!["e"]]);
    }

    #[test]
    fn a_group_larger_than_the_maximum_goes_alone() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(4, 0, 8));
        let mut q: VecDeque<_> = [("a", 1), ("big", 1000), ("b", 1)].into();
        let batches = drain(&mut b, &mut q, t0);
        assert_eq!(batches, vec![vec!["a"], vec!["big"], vec!["b"]]);
    }

    #[test]
    fn no_batch_is_gathered_while_every_slot_is_taken() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(100, 0, 2));
        let mut q: VecDeque<_> = [("a", 1)].into();
        assert_eq!(drain(&mut b, &mut q, t0), vec![vec!["a"]]);
        let mut q: VecDeque<_> = [("b", 1)].into();
        assert_eq!(drain(&mut b, &mut q, t0), vec![vec!["b"]]);
        assert_eq!(b.in_flight(), 2);
        assert_eq!(b.step(t0), Step::AwaitDecided);
        // Meanwhile groups pile up in the queue; a freed slot takes them
        // all into one batch.
        let mut q: VecDeque<_> = [("c", 1), ("d", 1), ("e", 1)].into();
        b.finished();
        assert_eq!(drain(&mut b, &mut q, t0), vec![vec!["c", "d", "e"]]);
        assert_eq!(b.step(t0), Step::AwaitDecided);
    }

    #[test]
    fn a_group_offered_while_no_slot_is_free_waits_for_one() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(100, 0, 1));
        let mut q: VecDeque<_> = [("a", 1)].into();
        assert_eq!(drain(&mut b, &mut q, t0), vec![vec!["a"]]);
        b.offer("b", 1, t0);
        assert_eq!(b.step(t0), Step::AwaitDecided);
        b.finished();
        assert_eq!(b.step(t0), Step::Take { until: t0 });
        b.ran_dry(t0);
        assert_eq!(b.step(t0), Step::Propose(vec!["b"]));
    }

    #[test]
    fn the_linger_keeps_a_batch_open_until_it_has_passed() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(100, 5, 2));
        assert_eq!(b.step(t0), Step::Receive);
        b.offer("a", 1, t0);
        assert_eq!(b.step(ms(t0, 1)), Step::Take { until: ms(t0, 5) });
        // Woken early with nothing queued: still open.
        b.ran_dry(ms(t0, 2));
        assert_eq!(b.step(ms(t0, 2)), Step::Take { until: ms(t0, 5) });
        b.offer("b", 2, ms(t0, 3));
        b.ran_dry(ms(t0, 5));
        assert_eq!(b.step(ms(t0, 5)), Step::Propose(vec!["a", "b"]));
    }

    #[test]
    fn empty_groups_ride_along() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(3, 0, 1));
        let mut q: VecDeque<_> = [("tick", 0), ("a", 2), ("tick2", 0)].into();
        assert_eq!(drain(&mut b, &mut q, t0), vec![vec!["tick", "a", "tick2"]]);
    }

    #[test]
    fn zero_limits_are_taken_as_one() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(0, 0, 0));
        let mut q: VecDeque<_> = [("a", 1), ("b", 1)].into();
        assert_eq!(drain(&mut b, &mut q, t0), vec![vec!["a"]]);
        assert_eq!(b.step(t0), Step::AwaitDecided);
        b.finished();
        assert_eq!(drain(&mut b, &mut q, t0), vec![vec!["b"]]);
    }

    /// Random arrivals, completions and time: every group is proposed once,
    /// in arrival order; batches keep to the count limit unless one group
    /// is larger; in-flight batches never exceed the limit.
    #[test]
    fn random_schedules_keep_every_rule() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let t0 = Instant::now();
            let max = 1 + next(8) as usize;
            let p = policy(max, next(3), 1 + next(3) as usize);
            let mut b: Batcher<(usize, usize)> = Batcher::new(p);
            let mut queue: VecDeque<(usize, usize)> = VecDeque::new();
            let mut proposed: Vec<(usize, usize)> = Vec::new();
            let mut now = t0;
            let mut arrived = 0;
            for _ in 0..300 {
                match next(4) {
                    0 => {
                        queue.push_back((arrived, next(12) as usize));
                        arrived += 1;
                    }
                    1 => now += Duration::from_millis(next(3)),
                    2 if b.in_flight() > 0 => b.finished(),
                    _ => {}
                }
                match b.step(now) {
                    Step::Propose(groups) => {
                        let commands: usize = groups.iter().map(|g| g.1).sum();
                        assert!(commands <= max || groups.len() == 1, "{groups:?} over {max}");
                        assert!(!groups.is_empty());
                        proposed.extend(groups);
                    }
                    Step::Take { .. } => match queue.pop_front() {
                        Some(g) => b.offer(g, g.1, now),
                        None => b.ran_dry(now),
                    },
                    Step::Receive => {
                        if let Some(g) = queue.pop_front() {
                            b.offer(g, g.1, now)
                        }
                    }
                    Step::AwaitDecided => assert_eq!(b.in_flight(), p.in_flight_max),
                }
                assert!(b.in_flight() <= p.in_flight_max);
            }
            let ids: Vec<usize> = proposed.iter().map(|g| g.0).collect();
            assert_eq!(ids, (0..ids.len()).collect::<Vec<_>>());
        }
    }
}
