//! `spendcap-bench memory`: how much memory a node needs per session.
//!
//! Starts three spendcap nodes, creates `sessions` sessions through the API
//! (bounded concurrency, spread over the nodes), and reports each node's
//! resident memory before and after, its peak, and its data directory size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::error::Result;
use crate::peers::spendcap::SpendcapCluster;
use crate::procs::{parse_kib_field, read_hwm_kib};

/// Session creations in flight at once.
pub const CREATE_CONCURRENCY_MAX: usize = 256;

#[derive(Debug, Serialize)]
pub struct NodeMemory {
    pub node: String,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub peak_rss_kib: u64,
    pub data_dir_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub sessions: u64,
    pub created_seconds: f64,
    pub sessions_per_second: f64,
    pub errors: u64,
    pub nodes: Vec<NodeMemory>,
    /// (largest RSS after - its RSS before) / sessions.
    pub bytes_per_session: f64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| parse_kib_field(&t, "VmRSS"))
        .unwrap_or(0)
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub async fn run(binary: &Path, work: &Path, sessions: u64, log_dir: &Path) -> Result<MemoryReport> {
    let token = "bench-memory-admin-token-0123456789";
    let cluster = SpendcapCluster::start(binary, work, log_dir, token, "memory").await?;
    let pids: Vec<(String, u32)> = cluster.roots();
    let before: Vec<u64> = pids.iter().map(|(_, pid)| rss_kib(*pid)).collect();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let urls = cluster.api_urls.clone();
    let started = Instant::now();
    let errors = futures::stream::iter(0..sessions)
        .map(|i| {
            let http = http.clone();
            let url = urls[(i % urls.len() as u64) as usize].clone();
            async move {
                let body = serde_json::json!({
                    "id": format!("mem-{i:08}"),
                    "cap": "25.00",
                    "agent_id": format!("agent-{}", i % 1000),
                    "wallet_address": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                    "expires_in_seconds": 86_400,
                });
                let ok = http
                    .post(format!("{url}/v1/sessions"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                u64::from(!ok)
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY_MAX)
        .fold(0u64, |acc, e| async move { acc + e })
        .await;
    let created_seconds = started.elapsed().as_secs_f64();
    let mut nodes = Vec::new();
    for (i, (label, pid)) in pids.iter().enumerate() {
        nodes.push(NodeMemory {
            node: label.clone(),
            rss_before_kib: before[i],
            rss_after_kib: rss_kib(*pid),
            peak_rss_kib: read_hwm_kib(*pid).unwrap_or(0),
            data_dir_bytes: dir_bytes(&work.join(format!("node{}", i + 1))),
        });
    }
    let growth = nodes
        .iter()
        .map(|n| n.rss_after_kib.saturating_sub(n.rss_before_kib))
        .max()
        .unwrap_or(0);
    Ok(MemoryReport {
        sessions,
        created_seconds,
        sessions_per_second: sessions as f64 / created_seconds.max(1e-9),
        errors,
        bytes_per_session: (growth * 1024) as f64 / sessions.max(1) as f64,
        nodes,
    })
}

/// Where `memory` writes when no folder is named.
pub fn default_out() -> PathBuf {
    PathBuf::from(format!(
        "results/memory-{}",
        crate::machine::utc_stamp(std::time::SystemTime::now())
    ))
}
