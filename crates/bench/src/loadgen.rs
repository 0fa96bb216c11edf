//! The load generator: closed loop (N workers, each sends, waits, sends
//! again) and open loop (requests scheduled at a fixed rate, latency
//! measured from each request's scheduled time so that a stalled server
//! cannot hide its queue: coordinated-omission correction, as in wrk2).
//!
//! Every run has a warm-up, then a measured window; the requests that
//! finish inside the window count (so an overloaded open-loop run still
//! reports what the system served, with the queueing delay it built up
//! since the warm-up). Every
//! worker stops by itself at the end of the window, after at most
//! `requests_max` requests in all, and every request has a timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{rngs::SmallRng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{BenchError, Result};
use crate::latency::{Latencies, LatencySummary};
use crate::peers::{BatchItem, Driver, Outcome};
use crate::tracker::Tracker;
use crate::workload::{AccountSet, OpCounter, Picker};

/// An open-loop request that starts within this much of its scheduled time
/// is measured from when it was sent: tokio's timer ticks every millisecond,
/// so smaller delays are the generator's, not the server's.
pub const OPEN_LOOP_TIMER_SLOP_MICROS: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum LoadMode {
    Closed {
        concurrency: usize,
    },
    Open {
        /// Offered authorizations per second (for batches, requests per
        /// second is this divided by the batch size).
        rate_per_second: u64,
        inflight_max: usize,
    },
}

impl LoadMode {
    /// Connections or workers a driver should be sized for.
    pub fn parallelism(self) -> usize {
        match self {
            Self::Closed { concurrency } => concurrency,
            Self::Open { inflight_max, .. } => inflight_max,
        }
    }

    pub fn label(self) -> String {
        match self {
            Self::Closed { concurrency } => format!("closed c={concurrency}"),
            Self::Open { rate_per_second, .. } => format!("open {rate_per_second}/s"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LoadPlan {
    pub mode: LoadMode,
    pub warmup: Duration,
    pub measure: Duration,
    pub request_timeout: Duration,
    pub requests_max: u64,
}

/// When the run starts, when measuring starts, when it ends.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub measure_start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn new(start: Instant, warmup: Duration, measure: Duration) -> Self {
        Self {
            start,
            measure_start: start + warmup,
            end: start + warmup + measure,
        }
    }
}

/// What the workers do: which accounts, how much, how many per request.
#[derive(Debug)]
pub struct Job {
    pub set: AccountSet,
    pub picker: Picker,
    pub amount_atomic: u64,
    /// 1 for single authorizations; more for batch requests.
    pub batch_items: usize,
    pub tracker: Arc<Tracker>,
    pub ops: OpCounter,
    pub rng_seed: u64,
}

/// The numbers of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub window_seconds: f64,
    /// Requests finished in the window that got an answer.
    pub requests: u64,
    /// Requests in the window that got none (timeouts, errors).
    pub requests_failed: u64,
    pub approved: u64,
    pub denied: u64,
    /// Authorizations without an answer (inside failed requests, or failed
    /// items of a batch).
    pub failed_items: u64,
    pub errors: BTreeMap<String, u64>,
    pub requests_per_second: f64,
    /// Answered authorizations (approved + denied) per second.
    pub authorizations_per_second: f64,
    /// Answered requests; open loop: from the scheduled time.
    pub latency: LatencySummary,
    /// Open loop only: from when each request was actually sent.
    pub service_latency: Option<LatencySummary>,
    /// Open loop only: requests scheduled before the end of the window but
    /// never sent because the window ended first (the system could not keep
    /// up with the offered rate).
    pub unsent: u64,
    /// Open loop only: requests sent later than the timer slop.
    pub late_starts: u64,
}

#[derive(Default)]
struct WorkerStats {
    latency: Latencies,
    service: Latencies,
    requests: u64,
    requests_failed: u64,
    approved: u64,
    denied: u64,
    failed_items: u64,
    errors: BTreeMap<&'static str, u64>,
    late_starts: u64,
    /// Every request sent, in or out of the window.
    sent: u64,
}

impl WorkerStats {
    fn add(&mut self, outcomes: &[Outcome]) -> bool {
        let mut answered = false;
        for outcome in outcomes {
            match *outcome {
                Outcome::Approved => {
                    self.approved += 1;
                    answered = true;
                }
                Outcome::Denied => {
                    self.denied += 1;
                    answered = true;
                }
                Outcome::Failed { kind, .. } => {
                    self.failed_items += 1;
                    *self.errors.entry(kind).or_default() += 1;
                }
            }
        }
        if answered {
            self.requests += 1;
        } else {
            self.requests_failed += 1;
        }
        answered
    }

    fn merge(&mut self, other: WorkerStats) {
        self.latency.merge(&other.latency);
        self.service.merge(&other.service);
        self.requests += other.requests;
        self.requests_failed += other.requests_failed;
        self.approved += other.approved;
        self.denied += other.denied;
        self.failed_items += other.failed_items;
        self.late_starts += other.late_starts;
        self.sent += other.sent;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// Sends one request of the job and records approvals for verification.
async fn execute<D: Driver>(
    driver: &D,
    job: &Job,
    worker: usize,
    rng: &mut SmallRng,
    timeout: Duration,
    outcomes: &mut Vec<Outcome>,
) {
    outcomes.clear();
    let amount = job.amount_atomic;
    if job.batch_items <= 1 {
        let account = job.picker.pick(job.ops.next(), rng);
        let outcome = match tokio::time::timeout(timeout, driver.authorize(worker, &job.set, account, amount)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed("timeout", true),
        };
        track(&job.tracker, account, amount, outcome);
        outcomes.push(outcome);
        return;
    }
    let items: Vec<BatchItem> = (0..job.batch_items)
        .map(|_| BatchItem {
            account: job.picker.pick(job.ops.next(), rng),
            amount_atomic: amount,
        })
        .collect();
    let answers = match tokio::time::timeout(timeout, driver.authorize_batch(worker, &job.set, &items)).await {
        Ok(answers) if answers.len() == items.len() => answers,
        Ok(_) => vec![Outcome::failed("batch_length", true); items.len()],
        Err(_) => vec![Outcome::failed("timeout", true); items.len()],
    };
    for (item, outcome) in items.iter().zip(&answers) {
        track(&job.tracker, item.account, item.amount_atomic, *outcome);
    }
    outcomes.extend(answers);
}

fn track(tracker: &Tracker, account: usize, amount: u64, outcome: Outcome) {
    match outcome {
        Outcome::Approved => tracker.approved(account, amount),
        Outcome::Failed {
            maybe_applied: true, ..
        } => tracker.unknown(account, amount),
        Outcome::Denied | Outcome::Failed { .. } => {}
    }
}

/// Runs the plan against the driver within `window` and returns the
/// numbers of the measured part.
pub async fn run<D: Driver>(driver: Arc<D>, job: Arc<Job>, plan: LoadPlan, window: Window) -> Result<LoadResult> {
    let started = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    let (workers_count, interval) = match plan.mode {
        LoadMode::Closed { concurrency } => (concurrency.max(1), None),
        LoadMode::Open {
            rate_per_second,
            inflight_max,
        } => {
            let requests_per_second = (rate_per_second / job.batch_items.max(1) as u64).max(1);
            (
                inflight_max.max(1),
                Some(Duration::from_nanos(1_000_000_000 / requests_per_second)),
            )
        }
    };
    for worker in 0..workers_count {
        let driver = driver.clone();
        let job = job.clone();
        let started = started.clone();
        workers.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(job.rng_seed ^ (worker as u64).rotate_left(32));
            let mut stats = WorkerStats::default();
            let mut outcomes = Vec::with_capacity(job.batch_items.max(1));
            let slop = Duration::from_micros(OPEN_LOOP_TIMER_SLOP_MICROS);
            loop {
                let slot = started.fetch_add(1, Ordering::Relaxed);
                if slot >= plan.requests_max {
                    break;
                }
                let scheduled = match interval {
                    None => Instant::now(),
                    Some(interval) => {
                        let Some(offset) = interval.checked_mul(u32::try_from(slot).unwrap_or(u32::MAX)) else {
                            break;
                        };
                        window.start + offset
                    }
                };
                if scheduled >= window.end || Instant::now() >= window.end {
                    break;
                }
                if interval.is_some() {
                    tokio::time::sleep_until(scheduled).await;
                }
                let sent = Instant::now();
                stats.sent += 1;
                execute(&*driver, &job, worker, &mut rng, plan.request_timeout, &mut outcomes).await;
                let done = Instant::now();
                if done < window.measure_start || done > window.end {
                    continue;
                }
                if stats.add(&outcomes) {
                    let lateness = sent.saturating_duration_since(scheduled);
                    let reference = if lateness <= slop { sent } else { scheduled };
                    if lateness > slop {
                        stats.late_starts += 1;
                    }
                    stats.latency.record(done - reference);
                    if interval.is_some() {
                        stats.service.record(done - sent);
                    }
                }
            }
            stats
        });
    }
    let mut total = WorkerStats::default();
    while let Some(joined) = workers.join_next().await {
        let stats = joined.map_err(|e| BenchError::Config(format!("a load worker failed: {e}")))?;
        total.merge(stats);
    }
    let window_seconds = (window.end - window.measure_start).as_secs_f64();
    let per_second = |n: u64| {
        if window_seconds > 0.0 {
            n as f64 / window_seconds
        } else {
            0.0
        }
    };
    let unsent = match interval {
        None => 0,
        Some(interval) => {
            let interval_ns = interval.as_nanos().max(1);
            let due = (window.end - window.start).as_nanos().div_ceil(interval_ns);
            let due = u64::try_from(due).unwrap_or(u64::MAX).min(plan.requests_max);
            due.saturating_sub(total.sent)
        }
    };
    Ok(LoadResult {
        window_seconds,
        requests: total.requests,
        requests_failed: total.requests_failed,
        approved: total.approved,
        denied: total.denied,
        failed_items: total.failed_items,
        errors: total.errors.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        requests_per_second: per_second(total.requests),
        authorizations_per_second: per_second(total.approved + total.denied),
        latency: total.latency.summary(),
        service_latency: interval.map(|_| total.service.summary()),
        unsent,
        late_starts: total.late_starts,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::tracker::StoredAccount;

    /// An in-memory peer with a fixed service time.
    struct FakePeer {
        spent: Mutex<Vec<u64>>,
        cap: u64,
        service: Duration,
    }

    impl FakePeer {
        fn decide(&self, account: usize, amount: u64) -> Outcome {
            let mut spent = self.spent.lock().unwrap();
            if spent[account] + amount > self.cap {
                Outcome::Denied
            } else {
                spent[account] += amount;
                Outcome::Approved
            }
        }
    }

    impl Driver for FakePeer {
        async fn create_accounts(&self, _set: &AccountSet) -> Result<()> {
            Ok(())
        }
        async fn authorize(&self, _w: usize, _s: &AccountSet, account: usize, amount: u64) -> Outcome {
            tokio::time::sleep(self.service).await;
            self.decide(account, amount)
        }
        async fn authorize_batch(&self, _w: usize, _s: &AccountSet, items: &[BatchItem]) -> Vec<Outcome> {
            tokio::time::sleep(self.service).await;
            items.iter().map(|i| self.decide(i.account, i.amount_atomic)).collect()
        }
        async fn read_accounts(&self, _set: &AccountSet) -> Result<Vec<Option<StoredAccount>>> {
            let spent = self.spent.lock().unwrap();
            Ok(spent
                .iter()
                .map(|&s| {
                    Some(StoredAccount {
                        cap_atomic: self.cap,
                        used_atomic: s,
                    })
                })
                .collect())
        }
    }

    fn job(accounts: usize, batch_items: usize, cap: u64) -> (Arc<Job>, Arc<FakePeer>) {
        let set = AccountSet::new("t", accounts, cap);
        let job = Job {
            picker: Picker::Uniform { count: accounts },
            set,
            amount_atomic: 10,
            batch_items,
            tracker: Arc::new(Tracker::new(accounts)),
            ops: OpCounter::default(),
            rng_seed: 7,
        };
        let peer = FakePeer {
            spent: Mutex::new(vec![0; accounts]),
            cap,
            service: Duration::from_millis(2),
        };
        (Arc::new(job), Arc::new(peer))
    }

    fn plan(mode: LoadMode) -> LoadPlan {
        LoadPlan {
            mode,
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(400),
            request_timeout: Duration::from_secs(1),
            requests_max: 1_000_000,
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_and_verifies() {
        let (job, peer) = job(5, 1, 200);
        let p = plan(LoadMode::Closed { concurrency: 4 });
        let w = Window::new(Instant::now(), p.warmup, p.measure);
        let r = run(peer.clone(), job.clone(), p, w).await.unwrap();
        // 4 workers, ~2 ms each, 0.4 s: on the order of 800 requests.
        assert!(r.requests > 100, "{r:?}");
        assert_eq!(r.requests, r.approved + r.denied);
        assert!(r.denied > 0, "caps of 200 with 10 per call must deny: {r:?}");
        assert!(r.latency.p50_us >= 2_000, "{r:?}");
        let stored = peer.read_accounts(&job.set).await.unwrap();
        assert!(job.tracker.verify(&job.set, &stored).ok);
    }

    #[tokio::test]
    async fn open_loop_holds_its_rate() {
        let (job, peer) = job(100, 1, u64::MAX / 2);
        let p = plan(LoadMode::Open {
            rate_per_second: 1000,
            inflight_max: 16,
        });
        let w = Window::new(Instant::now(), p.warmup, p.measure);
        let r = run(peer, job, p, w).await.unwrap();
        assert!((300..=450).contains(&r.requests), "{r:?}");
        assert_eq!(r.unsent, 0, "{r:?}");
        assert!(r.service_latency.is_some());
    }

    #[tokio::test]
    async fn open_loop_over_capacity_counts_queueing_and_unsent() {
        let (job, peer) = job(100, 1, u64::MAX / 2);
        // One in flight at ~2 ms each serves under 500/s; offer 2000/s.
        let p = plan(LoadMode::Open {
            rate_per_second: 2000,
            inflight_max: 1,
        });
        let w = Window::new(Instant::now(), p.warmup, p.measure);
        let r = run(peer, job, p, w).await.unwrap();
        assert!(r.unsent > 0, "{r:?}");
        let service = r.service_latency.clone().unwrap();
        assert!(r.latency.p99_us > 10 * service.p99_us, "{r:?}");
    }

    #[tokio::test]
    async fn batches_count_items_and_requests_max_bounds_a_run() {
        let (job, peer) = job(50, 20, u64::MAX / 2);
        let mut p = plan(LoadMode::Closed { concurrency: 2 });
        p.warmup = Duration::ZERO;
        p.requests_max = 10;
        let w = Window::new(Instant::now(), p.warmup, p.measure);
        let r = run(peer.clone(), job.clone(), p, w).await.unwrap();
        assert_eq!(r.requests, 10);
        assert_eq!(r.approved, 200);
        let stored = peer.read_accounts(&job.set).await.unwrap();
        let v = job.tracker.verify(&job.set, &stored);
        assert!(v.ok && v.approved_total_atomic == 2000, "{v:?}");
    }
}
