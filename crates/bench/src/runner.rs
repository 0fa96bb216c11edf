//! Runs the comparison: for each system, start its servers, create its
//! accounts, run every workload in every load mode, check the stored state
//! after each run, stop the servers. Results are written after every run so
//! an interrupted comparison keeps what it measured.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use crate::error::{BenchError, Result};
use crate::loadgen::{self, Job, LoadMode, LoadPlan, Window};
use crate::machine::{program_version, utc_stamp, MachineInfo};
use crate::peers::etcd::EtcdCluster;
use crate::peers::postgres::{PostgresServer, Variant};
use crate::peers::redis::RedisServer;
use crate::peers::spendcap::{DriverSettings, Routing, SessionTokens, SpendcapCluster};
use crate::peers::{Driver, System, SETUP_PARALLELISM};
use crate::procs::ResourceMeter;
use crate::report;
pub use crate::results::{Report, RunRecord, Settings, SystemRecord};
use crate::targets::{EtcdTarget, PostgresTarget, RedisTarget, SpendcapTarget, Target};
use crate::tracker::Tracker;
use crate::workload::{AccountSet, OpCounter, Picker, Workload, HOT_CAP_ATOMIC, SEED_CAP_ATOMIC, SPREAD_CAP_ATOMIC};

/// Delay between starting the workers and the start of the warm-up.
const START_DELAY_MILLIS: u64 = 20;
/// Seed sessions are sized for this much more traffic than expected.
const SEED_SESSIONS_HEADROOM: f64 = 1.25;
/// Bounds of the seed window (sessions in use at once).
const SEED_WINDOW_SESSIONS_MIN: usize = 64;
const SEED_WINDOW_SESSIONS_MAX: usize = 4096;

/// The version line each system's binary prints.
fn versions(settings: &Settings) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    for system in &settings.systems {
        let binary = match system {
            System::Etcd => settings.etcd_bin.clone(),
            System::Postgres | System::PostgresForUpdate => settings.postgres_bin_dir.join("postgres"),
            System::Redis => settings.redis_bin.clone(),
            System::Spendcap | System::SpendcapLeader => settings.spendcap_bin.clone(),
        };
        v.insert(system.program().to_string(), program_version(&binary, &["--version"]));
    }
    v
}

/// A fresh directory for one system's data, readable by the PostgreSQL
/// user when the harness runs as root.
fn system_dir(base: &Path, system: System) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-", system.name()))
        .tempdir_in(base)
        .map_err(|e| BenchError::io(format!("creating a temp dir in {}", base.display()), e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| BenchError::io("setting temp dir permissions", e))?;
    Ok(dir)
}

/// Runs the whole comparison and writes `results.json`, `report.md` and the
/// charts into `settings.out_dir`.
pub async fn run(settings: Settings, command: Vec<String>) -> Result<Report> {
    settings.validate()?;
    let logs = settings.out_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| BenchError::io(format!("creating {}", logs.display()), e))?;
    std::fs::create_dir_all(&settings.work_dir)
        .map_err(|e| BenchError::io(format!("creating {}", settings.work_dir.display()), e))?;
    let work = tempfile::Builder::new()
        .prefix("spendcap-bench-")
        .tempdir_in(&settings.work_dir)
        .map_err(|e| BenchError::io("creating the work dir", e))?;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| BenchError::io("setting work dir permissions", e))?;

    let machine = MachineInfo::collect(work.path(), versions(&settings));
    let mut report = Report {
        started_at: utc_stamp(SystemTime::now()),
        finished_at: None,
        command,
        settings: settings.clone(),
        machine,
        systems: Vec::new(),
        runs: Vec::new(),
    };
    report::write_json(&report, &settings.out_dir)?;

    for &system in &settings.systems {
        let dir = system_dir(work.path(), system)?;
        eprintln!("== {}: starting", system.name());
        let started = StdInstant::now();
        let outcome = bench_system(&settings, system, dir.path(), &logs, &mut report).await;
        let mut record = SystemRecord {
            system: Some(system),
            topology: system.topology().to_string(),
            version: report
                .machine
                .versions
                .get(system.program())
                .cloned()
                .unwrap_or_default(),
            start_seconds: started.elapsed().as_secs_f64(),
            error: None,
        };
        if let Err(e) = outcome {
            eprintln!("== {}: {e}", system.name());
            record.error = Some(e.to_string());
        }
        report.systems.push(record);
        report::write_json(&report, &settings.out_dir)?;
        drop(dir);
    }
    report.finished_at = Some(utc_stamp(SystemTime::now()));
    report::write_all(&report, &settings.out_dir)?;
    Ok(report)
}

async fn bench_system(settings: &Settings, system: System, dir: &Path, logs: &Path, report: &mut Report) -> Result<()> {
    let timeout = Settings::seconds(settings.request_timeout_seconds);
    match system {
        System::Etcd => {
            let cluster = EtcdCluster::start(&settings.etcd_bin, dir, logs).await?;
            let mut target = EtcdTarget {
                cluster,
                timeout,
                attempts_max: settings.etcd_attempts_max,
            };
            run_workloads(settings, system, &mut target, report).await
        }
        System::Postgres | System::PostgresForUpdate => {
            let pool_max = settings.postgres_pool_connections_max;
            let server = PostgresServer::start(&settings.postgres_bin_dir, dir, logs, system.name(), pool_max).await?;
            let variant = if system == System::Postgres {
                Variant::ConditionalUpdate
            } else {
                Variant::SelectForUpdate
            };
            let mut target = PostgresTarget {
                server,
                variant,
                pool_max,
            };
            run_workloads(settings, system, &mut target, report).await
        }
        System::Redis => {
            let server = RedisServer::start(&settings.redis_bin, dir, logs).await?;
            let mut target = RedisTarget {
                server,
                connections_max: settings.redis_connections_max,
                timeout,
            };
            run_workloads(settings, system, &mut target, report).await
        }
        System::Spendcap | System::SpendcapLeader => {
            let admin_token = format!("bench-admin-{}", std::process::id());
            let cluster =
                SpendcapCluster::start(&settings.spendcap_bin, dir, logs, &admin_token, system.name()).await?;
            let mut target = SpendcapTarget {
                cluster,
                routing: if system == System::Spendcap {
                    Routing::AllNodes
                } else {
                    Routing::LeaderOnly
                },
                settings: DriverSettings {
                    admin_token,
                    token_mode: settings.spendcap_token_mode,
                    hold_seconds: settings.spendcap_hold_seconds,
                    request_timeout: timeout,
                },
                tokens: Arc::new(SessionTokens::default()),
            };
            run_workloads(settings, system, &mut target, report).await
        }
    }
}

/// How many seed sessions a run gets, and how many it uses at once.
///
/// Every session should see about `seed_calls_per_session` calls (two
/// approvals, then denials), whatever the system's speed: the sessions are
/// sized from the traffic expected (the offered rate, or `expected_rate`,
/// the closed-loop rate seen so far), never fewer than
/// `settings.seed_sessions`. The window, the sessions in use at once, is
/// wide enough that concurrent calls rarely meet on one session, and narrow
/// enough that sessions are used up within the run.
pub fn seed_plan(settings: &Settings, mode: LoadMode, expected_rate: Option<f64>) -> (usize, usize) {
    let seconds = settings.warmup_seconds + settings.measure_seconds;
    let (rate, window) = match mode {
        LoadMode::Open { rate_per_second, .. } => (Some(rate_per_second as f64), rate_per_second as usize / 20),
        LoadMode::Closed { concurrency } => (expected_rate, concurrency.saturating_mul(4)),
    };
    let window = window.clamp(SEED_WINDOW_SESSIONS_MIN, SEED_WINDOW_SESSIONS_MAX);
    let sessions = match rate {
        Some(rate) if rate > 0.0 => {
            let calls = rate * seconds * SEED_SESSIONS_HEADROOM;
            (calls / settings.seed_calls_per_session.max(1) as f64).ceil() as usize
        }
        _ => 0,
    };
    let floor = settings.seed_sessions.max(window);
    (sessions.clamp(floor, settings.seed_sessions_max.max(floor)), window)
}

/// The accounts one workload draws on, with their tracker.
struct Accounts {
    set: AccountSet,
    tracker: Arc<Tracker>,
}

async fn create<D: Driver>(driver: &D, set: AccountSet) -> Result<Accounts> {
    let started = StdInstant::now();
    driver.create_accounts(&set).await?;
    eprintln!(
        "   created {} accounts '{}' in {:.1} s",
        set.count,
        set.name,
        started.elapsed().as_secs_f64()
    );
    Ok(Accounts {
        tracker: Arc::new(Tracker::new(set.count)),
        set,
    })
}

async fn run_workloads<T: Target>(
    settings: &Settings,
    system: System,
    target: &mut T,
    report: &mut Report,
) -> Result<()> {
    let setup = target.connect(SETUP_PARALLELISM).await?;
    let mut hot: Option<Accounts> = None;
    let mut spread: Option<Accounts> = None;
    let mut seed_runs = 0usize;
    for &workload in &settings.workloads {
        for mode in settings.modes() {
            target.check_running()?;
            let accounts = match workload {
                Workload::Hot => {
                    if hot.is_none() {
                        hot = Some(create(&setup, AccountSet::new("hot", 1, HOT_CAP_ATOMIC)).await?);
                    }
                    hot.as_ref()
                }
                Workload::Spread | Workload::Batch => {
                    if spread.is_none() {
                        let set = AccountSet::new("spread", settings.spread_accounts, SPREAD_CAP_ATOMIC);
                        spread = Some(create(&setup, set).await?);
                    }
                    spread.as_ref()
                }
                Workload::Seed => None,
            };
            let mut seed_window = SEED_WINDOW_SESSIONS_MIN;
            // Seed sessions are used up by a run, so each run gets new ones.
            let fresh;
            let accounts = match accounts {
                Some(a) => a,
                None => {
                    seed_runs += 1;
                    // The best guess of this run's rate: the spread run at
                    // the same load, or an earlier seed run if faster
                    // (denials are cheap for some systems).
                    let expected_rate = report
                        .runs
                        .iter()
                        .filter(|r| r.system == system)
                        .filter(|r| (r.workload == Workload::Spread && r.load == mode) || r.workload == Workload::Seed)
                        .filter_map(|r| r.result.as_ref())
                        .map(|r| r.authorizations_per_second)
                        .reduce(f64::max);
                    let (sessions, window) = seed_plan(settings, mode, expected_rate);
                    seed_window = window;
                    let set = AccountSet::new(format!("seed-r{seed_runs}"), sessions, SEED_CAP_ATOMIC);
                    fresh = create(&setup, set).await?;
                    &fresh
                }
            };
            let record = measure(settings, system, workload, mode, target, &setup, accounts, seed_window).await;
            if let Some(error) = &record.error {
                eprintln!("   {} {}: {error}", workload.name(), mode.label());
            } else if let Some(r) = &record.result {
                eprintln!(
                    "   {:<6} {:<14} {:>9.0} auth/s  p50 {:>7.2} ms  p99 {:>8.2} ms  ok {} denied {} failed {}  check {}",
                    workload.name(),
                    mode.label(),
                    r.authorizations_per_second,
                    r.latency.p50_us as f64 / 1000.0,
                    r.latency.p99_us as f64 / 1000.0,
                    r.approved,
                    r.denied,
                    r.failed_items,
                    match &record.verification {
                        Some(v) if v.ok => "ok",
                        Some(_) => "FAILED",
                        None => "-",
                    }
                );
            }
            report.runs.push(record);
            report::write_json(report, &settings.out_dir)?;
            tokio::time::sleep(Settings::seconds(settings.settle_seconds)).await;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn measure<T: Target>(
    settings: &Settings,
    system: System,
    workload: Workload,
    mode: LoadMode,
    target: &T,
    setup: &T::D,
    accounts: &Accounts,
    seed_window: usize,
) -> RunRecord {
    let batch_items = if workload == Workload::Batch {
        settings.batch_items
    } else {
        1
    };
    let mut record = RunRecord {
        system,
        workload,
        load: mode,
        batch_items,
        accounts: accounts.set.count,
        result: None,
        resources: None,
        verification: None,
        error: None,
    };
    let picker = match workload {
        Workload::Hot => Picker::Single,
        Workload::Spread | Workload::Batch => Picker::Uniform {
            count: accounts.set.count,
        },
        Workload::Seed => Picker::Sequential {
            count: accounts.set.count,
            window: seed_window,
            calls_per_session: settings.seed_calls_per_session,
        },
    };
    let driver = match target.connect(mode.parallelism()).await {
        Ok(d) => Arc::new(d),
        Err(e) => {
            record.error = Some(format!("connecting: {e}"));
            return record;
        }
    };
    let job = Arc::new(Job {
        set: accounts.set.clone(),
        picker,
        amount_atomic: workload.amount_atomic(),
        batch_items,
        tracker: accounts.tracker.clone(),
        ops: OpCounter::default(),
        rng_seed: 0x5eed ^ ((workload as u64) << 8),
    });
    let plan = LoadPlan {
        mode,
        warmup: Settings::seconds(settings.warmup_seconds),
        measure: Settings::seconds(settings.measure_seconds),
        request_timeout: Settings::seconds(settings.request_timeout_seconds),
        requests_max: settings.requests_per_run_max,
    };
    let window = Window::new(
        tokio::time::Instant::now() + Duration::from_millis(START_DELAY_MILLIS),
        plan.warmup,
        plan.measure,
    );
    let load = tokio::spawn(loadgen::run(driver.clone(), job, plan, window));
    tokio::time::sleep_until(window.measure_start).await;
    let meter = ResourceMeter::start(target.roots());
    tokio::time::sleep_until(window.end).await;
    record.resources = Some(meter.finish().await);
    match load.await {
        Ok(Ok(result)) => record.result = Some(result),
        Ok(Err(e)) => record.error = Some(e.to_string()),
        Err(e) => record.error = Some(format!("load generator: {e}")),
    }
    drop(driver);
    match setup.read_accounts(&accounts.set).await {
        Ok(stored) => record.verification = Some(accounts.tracker.verify(&accounts.set, &stored)),
        Err(e) => {
            let text = format!("reading accounts back: {e}");
            record.error = Some(match record.error.take() {
                Some(first) => format!("{first}; {text}"),
                None => text,
            });
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::peers::spendcap::TokenMode;

    fn settings() -> Settings {
        Settings {
            systems: vec![],
            workloads: vec![],
            concurrency_levels: vec![1],
            open_rates_per_second: vec![],
            open_inflight_max: 16,
            warmup_seconds: 2.0,
            measure_seconds: 8.0,
            settle_seconds: 0.0,
            request_timeout_seconds: 1.0,
            requests_per_run_max: 1000,
            spread_accounts: 10,
            seed_sessions: 5000,
            seed_sessions_max: 100_000,
            seed_calls_per_session: 8,
            batch_items: 10,
            postgres_pool_connections_max: 4,
            redis_connections_max: 4,
            etcd_attempts_max: 10,
            spendcap_token_mode: TokenMode::Session,
            spendcap_hold_seconds: 3600,
            spendcap_bin: PathBuf::new(),
            etcd_bin: PathBuf::new(),
            redis_bin: PathBuf::new(),
            postgres_bin_dir: PathBuf::new(),
            out_dir: PathBuf::new(),
            work_dir: PathBuf::new(),
            quick: false,
        }
    }

    #[test]
    fn seed_sessions_follow_the_expected_traffic() {
        let s = settings();
        // 8000 calls/s for 10 s, 8 calls each, 25% headroom: 12,500 sessions.
        let open = LoadMode::Open {
            rate_per_second: 8000,
            inflight_max: 16,
        };
        assert_eq!(seed_plan(&s, open, None), (12_500, 400));
        let closed = LoadMode::Closed { concurrency: 256 };
        assert_eq!(seed_plan(&s, closed, Some(8000.0)), (12_500, 1024));
        // Unknown or low throughput: the floor; huge throughput: the cap.
        assert_eq!(seed_plan(&s, closed, None), (5000, 1024));
        assert_eq!(
            seed_plan(&s, LoadMode::Closed { concurrency: 1 }, Some(1.0)),
            (5000, 64)
        );
        assert_eq!(seed_plan(&s, closed, Some(1e9)), (100_000, 1024));
    }

    #[test]
    fn settings_are_validated() {
        let mut s = settings();
        assert!(s.validate().is_ok());
        s.batch_items = 1001;
        assert!(s.validate().is_err());
        s.batch_items = 10;
        s.concurrency_levels = vec![0];
        assert!(s.validate().is_err());
    }
}
