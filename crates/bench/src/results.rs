//! What a comparison is configured with and what it found: the types
//! `results.json` holds, shared by the runner that fills them and the
//! report and charts drawn from them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};
use crate::loadgen::{LoadMode, LoadResult};
use crate::machine::MachineInfo;
use crate::peers::spendcap::TokenMode;
use crate::peers::System;
use crate::procs::ResourceUsage;
use crate::tracker::Verification;
use crate::workload::Workload;

/// Everything a comparison run is configured with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub systems: Vec<System>,
    pub workloads: Vec<Workload>,
    pub concurrency_levels: Vec<usize>,
    /// Offered authorizations per second for the open-loop runs.
    pub open_rates_per_second: Vec<u64>,
    pub open_inflight_max: usize,
    pub warmup_seconds: f64,
    pub measure_seconds: f64,
    pub settle_seconds: f64,
    pub request_timeout_seconds: f64,
    pub requests_per_run_max: u64,
    pub spread_accounts: usize,
    /// Fewest sessions of a seed run (more when the expected traffic needs them).
    pub seed_sessions: usize,
    pub seed_sessions_max: usize,
    pub seed_calls_per_session: u64,
    pub batch_items: usize,
    pub postgres_pool_connections_max: usize,
    pub redis_connections_max: usize,
    pub etcd_attempts_max: u32,
    pub spendcap_token_mode: TokenMode,
    pub spendcap_hold_seconds: u64,
    pub spendcap_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub redis_bin: PathBuf,
    pub postgres_bin_dir: PathBuf,
    pub out_dir: PathBuf,
    /// Where the servers keep their data (a fresh temp dir inside it).
    pub work_dir: PathBuf,
    pub quick: bool,
}

impl Settings {
    pub(crate) fn seconds(s: f64) -> Duration {
        Duration::from_secs_f64(s.max(0.0))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(BenchError::Config(m.to_string()));
        if self.measure_seconds <= 0.0 {
            return bad("measure seconds must be positive");
        }
        if self.batch_items == 0 || self.batch_items > api::BATCH_ITEMS_MAX {
            return bad("batch items must be 1..=1000");
        }
        if self.concurrency_levels.contains(&0) || self.open_rates_per_second.contains(&0) {
            return bad("concurrency levels and open rates must be positive");
        }
        if self.spread_accounts == 0 || self.seed_sessions == 0 {
            return bad("account counts must be positive");
        }
        Ok(())
    }

    pub(crate) fn modes(&self) -> Vec<LoadMode> {
        let closed = self
            .concurrency_levels
            .iter()
            .map(|&concurrency| LoadMode::Closed { concurrency });
        let open = self.open_rates_per_second.iter().map(|&rate| LoadMode::Open {
            rate_per_second: rate,
            inflight_max: self.open_inflight_max,
        });
        closed.chain(open).collect()
    }
}

/// One system's start-up, for the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SystemRecord {
    pub system: Option<System>,
    pub topology: String,
    pub version: String,
    pub start_seconds: f64,
    pub error: Option<String>,
}

/// One measured run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub system: System,
    pub workload: Workload,
    pub load: LoadMode,
    pub batch_items: usize,
    pub accounts: usize,
    pub result: Option<LoadResult>,
    pub resources: Option<ResourceUsage>,
    pub verification: Option<Verification>,
    pub error: Option<String>,
}

/// The whole comparison: what `results.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub started_at: String,
    pub finished_at: Option<String>,
    pub command: Vec<String>,
    pub settings: Settings,
    pub machine: MachineInfo,
    pub systems: Vec<SystemRecord>,
    pub runs: Vec<RunRecord>,
}
