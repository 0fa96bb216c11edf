//! Each real peer (etcd, PostgreSQL, Redis), started from its Debian
//! package the way the harness starts it, under contention: a few $25
//! accounts hammered with $10 calls by many clients at once, single and in
//! batches. Every account must end with exactly two approvals ($20 spent)
//! and the stored state must match what the clients saw. A peer whose
//! binary is not installed fails its test (never a silent pass):
//! `scripts/setup.sh --test` installs them (Debian: redis-server,
//! postgresql, etcd-server).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bench::loadgen::{self, Job, LoadMode, LoadPlan, Window};
use bench::peers::etcd::{EtcdCluster, EtcdDriver};
use bench::peers::postgres::{self, PostgresDriver, PostgresServer, Variant};
use bench::peers::redis::{RedisDriver, RedisServer};
use bench::peers::Driver;
use bench::tracker::Tracker;
use bench::workload::{AccountSet, OpCounter, Picker};

const ACCOUNTS: usize = 6;
const CAP_ATOMIC: u64 = 25_000_000;
const AMOUNT_ATOMIC: u64 = 10_000_000;
const CONCURRENCY: usize = 16;

fn installed(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.exists())
}

/// Fails the test: a peer that is not installed is not tested, and a test
/// that did not run must not pass.
fn missing(what: &str, package: &str) -> ! {
    panic!(
        "{what} is not installed, so this peer cannot be tested: run scripts/setup.sh --test \
         (or apt-get install {package})"
    )
}

async fn contend<D: Driver>(driver: Arc<D>, name: &str, batch_items: usize) {
    let set = AccountSet::new(name, ACCOUNTS, CAP_ATOMIC);
    driver.create_accounts(&set).await.unwrap();
    let tracker = Arc::new(Tracker::new(ACCOUNTS));
    let job = Arc::new(Job {
        picker: Picker::Uniform { count: ACCOUNTS },
        set: set.clone(),
        amount_atomic: AMOUNT_ATOMIC,
        batch_items,
        tracker: tracker.clone(),
        ops: OpCounter::default(),
        rng_seed: 11,
    });
    let plan = LoadPlan {
        mode: LoadMode::Closed {
            concurrency: CONCURRENCY,
        },
        warmup: Duration::ZERO,
        measure: Duration::from_millis(1500),
        request_timeout: Duration::from_secs(10),
        requests_max: 3000,
    };
    let window = Window::new(tokio::time::Instant::now(), plan.warmup, plan.measure);
    let result = loadgen::run(driver.clone(), job, plan, window).await.unwrap();
    assert_eq!(result.failed_items, 0, "{name}: {result:?}");
    assert!(result.denied > 0, "{name}: {result:?}");
    let stored = driver.read_accounts(&set).await.unwrap();
    let check = tracker.verify(&set, &stored);
    assert!(check.ok, "{name}: {check:?}");
    assert_eq!(
        check.stored_total_atomic,
        ACCOUNTS as u64 * 2 * AMOUNT_ATOMIC,
        "{name}: {check:?}"
    );
    for account in stored.iter().flatten() {
        assert_eq!(account.used_atomic, 2 * AMOUNT_ATOMIC, "{name}: {stored:?}");
    }
}

fn scratch() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    (dir, logs)
}

fn data(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[tokio::test]
async fn redis_never_overspends() {
    let Some(bin) = installed("redis-server") else {
        missing("redis-server (on PATH)", "redis-server");
    };
    let (dir, logs) = scratch();
    let server = RedisServer::start(&bin, &data(dir.path(), "redis"), &logs)
        .await
        .unwrap();
    let driver = Arc::new(
        RedisDriver::connect(server.port, 4, Duration::from_secs(10))
            .await
            .unwrap(),
    );
    contend(driver.clone(), "single", 1).await;
    contend(driver, "batch", 4).await;
}

#[tokio::test]
async fn postgres_never_overspends() {
    let Some(bin_dir) = postgres::default_bin_dir() else {
        missing("PostgreSQL (/usr/lib/postgresql/<version>/bin/postgres)", "postgresql");
    };
    let (dir, logs) = scratch();
    let server = PostgresServer::start(&bin_dir, &data(dir.path(), "pg"), &logs, "postgres", CONCURRENCY)
        .await
        .unwrap();
    for (variant, tag) in [(Variant::ConditionalUpdate, "cu"), (Variant::SelectForUpdate, "fu")] {
        let driver = Arc::new(
            PostgresDriver::connect(server.port, CONCURRENCY / 2, variant)
                .await
                .unwrap(),
        );
        contend(driver.clone(), &format!("{tag}-single"), 1).await;
        contend(driver, &format!("{tag}-batch"), 4).await;
    }
}

#[tokio::test]
async fn etcd_never_overspends() {
    let Some(bin) = installed("etcd") else {
        missing("etcd (on PATH)", "etcd-server");
    };
    let (dir, logs) = scratch();
    let cluster = EtcdCluster::start(&bin, &data(dir.path(), "etcd"), &logs)
        .await
        .unwrap();
    let driver =
        Arc::new(EtcdDriver::connect(cluster.client_urls.clone(), CONCURRENCY, Duration::from_secs(10), 1000).unwrap());
    contend(driver.clone(), "single", 1).await;
    contend(driver, "batch", 4).await;
}
