//! `spendcap-bench`: runs the comparison (`run`) or redraws a results
//! folder's report and charts (`render`).

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context};
use bench::machine::utc_stamp;
use bench::peers::spendcap::{default_binary, TokenMode};
use bench::peers::System;
use bench::report;
use bench::runner::{self, Settings};
use bench::workload::Workload;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "spendcap-bench", about = "Compare spendcap with etcd, PostgreSQL and Redis")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start each system, drive every workload, write a results folder.
    Run(Box<RunArgs>),
    /// Redraw report.md and the charts of a results folder from its results.json.
    Render {
        /// The results folder.
        dir: PathBuf,
    },
    /// Memory per session: create sessions in a three-node cluster and
    /// report each node's resident memory.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        sessions: u64,
        /// Default: the release build.
        #[arg(long)]
        spendcap_bin: Option<PathBuf>,
        /// Results folder; default results/memory-<UTC timestamp>.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the nodes' data directories go (a temp dir inside it).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A smoke run of about a minute and a half: one concurrency, one rate,
    /// short windows, small account sets (explicit options still win).
    #[arg(long)]
    quick: bool,
    /// Systems to run, in order.
    #[arg(long, value_enum, value_delimiter = ',')]
    systems: Option<Vec<System>>,
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Option<Vec<Workload>>,
    /// Closed-loop concurrency levels.
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Open-loop offered authorizations per second (none: skip open loop).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    open_rates: Option<Vec<u64>>,
    #[arg(long)]
    open_inflight_max: Option<usize>,
    #[arg(long)]
    warmup_seconds: Option<f64>,
    #[arg(long)]
    measure_seconds: Option<f64>,
    /// Pause between runs.
    #[arg(long)]
    settle_seconds: Option<f64>,
    /// Default 10 (quick: 5).
    #[arg(long)]
    request_timeout_seconds: Option<f64>,
    #[arg(long, default_value_t = 10_000_000)]
    requests_per_run_max: u64,
    #[arg(long)]
    spread_accounts: Option<usize>,
    /// Fewest sessions of a seed run (more when the system's throughput
    /// calls for more).
    #[arg(long)]
    seed_sessions: Option<usize>,
    #[arg(long)]
    seed_sessions_max: Option<usize>,
    #[arg(long, default_value_t = 8)]
    seed_calls_per_session: u64,
    /// Authorizations per batch request (at most 1000).
    #[arg(long)]
    batch_items: Option<usize>,
    /// PostgreSQL pool: min(concurrency, this) connections.
    #[arg(long, default_value_t = 64)]
    postgres_pool_connections_max: usize,
    /// Redis: min(concurrency, this) multiplexed connections.
    #[arg(long, default_value_t = 16)]
    redis_connections_max: usize,
    /// etcd: compare-and-swap attempts per authorization before giving up.
    #[arg(long, default_value_t = 1000)]
    etcd_attempts_max: u32,
    /// Bearer token of single spendcap authorizations.
    #[arg(long, value_enum, default_value_t = TokenMode::Session)]
    spendcap_token: TokenMode,
    /// Hold lifetime of spendcap authorizations (at most 3600).
    #[arg(long, default_value_t = 3600)]
    spendcap_hold_seconds: u64,
    /// Default: $CARGO_TARGET_DIR (or ./target)/x86_64-unknown-linux-gnu/release/spendcap.
    #[arg(long)]
    spendcap_bin: Option<PathBuf>,
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Default: the newest /usr/lib/postgresql/<version>/bin.
    #[arg(long)]
    postgres_bin_dir: Option<PathBuf>,
    /// Results folder; default results/bench-<UTC timestamp>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the servers' data directories go (a temp dir inside it).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn settings(a: RunArgs) -> anyhow::Result<Settings> {
    let q = a.quick;
    let pick = |quick: f64, full: f64| if q { quick } else { full };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let postgres_bin_dir = match a.postgres_bin_dir {
        Some(dir) => dir,
        None => bench::peers::postgres::default_bin_dir()
            .context("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")?,
    };
    Ok(Settings {
        systems: a.systems.unwrap_or_else(|| System::ALL.to_vec()),
        workloads: a.workloads.unwrap_or_else(|| Workload::ALL.to_vec()),
        concurrency_levels: a
            .concurrency
            .unwrap_or_else(|| if q { vec![16] } else { vec![1, 16, 64, 256] }),
        open_rates_per_second: a
            .open_rates
            .unwrap_or_else(|| if q { vec![500] } else { vec![1000, 5000, 10_000] }),
        open_inflight_max: a.open_inflight_max.unwrap_or(256),
        warmup_seconds: a.warmup_seconds.unwrap_or(pick(0.25, 2.0)),
        measure_seconds: a.measure_seconds.unwrap_or(pick(0.75, 10.0)),
        settle_seconds: a.settle_seconds.unwrap_or(pick(0.05, 1.0)),
        request_timeout_seconds: a.request_timeout_seconds.unwrap_or(pick(5.0, 10.0)),
        requests_per_run_max: a.requests_per_run_max,
        spread_accounts: a.spread_accounts.unwrap_or(if q { 1000 } else { 10_000 }),
        seed_sessions: a.seed_sessions.unwrap_or(if q { 2000 } else { 10_000 }),
        seed_sessions_max: a.seed_sessions_max.unwrap_or(if q { 50_000 } else { 300_000 }),
        seed_calls_per_session: a.seed_calls_per_session,
        batch_items: a.batch_items.unwrap_or(if q { 50 } else { 1000 }),
        postgres_pool_connections_max: a.postgres_pool_connections_max,
        redis_connections_max: a.redis_connections_max,
        etcd_attempts_max: a.etcd_attempts_max,
        spendcap_token_mode: a.spendcap_token,
        spendcap_hold_seconds: a.spendcap_hold_seconds,
        spendcap_bin: a.spendcap_bin.unwrap_or_else(|| default_binary(&target_dir)),
        etcd_bin: a.etcd_bin,
        redis_bin: a.redis_bin,
        postgres_bin_dir,
        out_dir: a
            .out
            .unwrap_or_else(|| PathBuf::from("results").join(format!("bench-{}", utc_stamp(SystemTime::now())))),
        work_dir: a.work_dir.unwrap_or_else(std::env::temp_dir),
        quick: q,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run(args) => {
            let settings = settings(*args)?;
            let out = settings.out_dir.clone();
            eprintln!("results: {}", out.display());
            let report = runner::run(settings, std::env::args().collect()).await?;
            eprintln!("wrote {}", out.join(report::MARKDOWN_FILE).display());
            let failed_checks = report
                .runs
                .iter()
                .filter(|r| r.verification.as_ref().is_some_and(|v| !v.ok))
                .count();
            let failed_systems = report.systems.iter().filter(|s| s.error.is_some()).count();
            if failed_checks > 0 || failed_systems > 0 {
                bail!(
                    "{failed_checks} run(s) failed the correctness check and {failed_systems} \
                     system(s) failed; see {}",
                    out.join(report::MARKDOWN_FILE).display()
                );
            }
        }
        Cmd::Render { dir } => {
            let report = report::read_json(&dir.join(report::JSON_FILE))?;
            report::write_all(&report, &dir)?;
            eprintln!("wrote {}", dir.join(report::MARKDOWN_FILE).display());
        }
        Cmd::Memory {
            sessions,
            spendcap_bin,
            out,
            work_dir,
        } => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "target".into());
            let binary = spendcap_bin.unwrap_or_else(|| default_binary(&target));
            let out = out.unwrap_or_else(bench::memory::default_out);
            std::fs::create_dir_all(out.join("logs")).with_context(|| format!("creating {}", out.display()))?;
            let work = match work_dir {
                Some(d) => tempfile::tempdir_in(d)?,
                None => tempfile::tempdir()?,
            };
            let report = bench::memory::run(&binary, work.path(), sessions, &out.join("logs")).await?;
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(out.join("memory.json"), &json)?;
            println!("{json}");
            if report.errors > 0 {
                bail!("{} of {} session creations failed", report.errors, report.sessions);
            }
        }
    }
    Ok(())
}
