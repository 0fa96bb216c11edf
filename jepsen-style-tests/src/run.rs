//! One run: a fresh compose cluster, setup, workload under a nemesis
//! schedule, healing, resolution of unknowns, final read, checks, results
//! folder, teardown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::checker::{check_all, CheckOptions};
use crate::client::Api;
use crate::compose::{free_ports, Compose, ComposeTool, TeardownGuard};
use crate::history::History;
use crate::nemesis::{run_schedule, schedule, Nemesis};
use crate::report::{approval_share, counts, fault_summary, latency_chart, unknown_summary, write_summary, Summary};
use crate::workload::{
    final_read, resolve_unknowns, run_clients, settle_expiry, setup, wait_for_cluster, wall_ms, Ctx, Recorder,
    WorkloadConfig,
};

/// Most concurrent logical clients.
pub const CLIENTS_MAX: usize = 50;
/// Longest workload phase of one run.
pub const RUN_SECONDS_MAX: f64 = 3600.0;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub image: String,
    pub compose_file: PathBuf,
    pub schedule: String,
    pub run_seconds: f64,
    pub clients: usize,
    pub seed_sessions: usize,
    pub operations_max: u64,
    pub request_timeout_ms: u64,
    pub results_dir: PathBuf,
    pub expect_invalid: bool,
    /// `NAME=VALUE` lines added to the nodes' env file (e.g. the fault
    /// build's `SPENDCAP_FAULT=local-decide`).
    pub node_env: Vec<String>,
    pub seed: u64,
    pub cluster_up_seconds_max: u64,
    pub check: CheckOptions,
}

pub struct RunOutcome {
    pub dir: PathBuf,
    pub summary: Summary,
}

fn hex(rng: &mut StdRng, bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

fn check_host_tools(needs_partitions: bool) -> anyhow::Result<()> {
    if !needs_partitions {
        return Ok(());
    }
    for tool in ["nsenter", "iptables"] {
        let ok = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            bail!("{tool} is needed on the host for partitions (run.sh installs iptables with apt)");
        }
    }
    Ok(())
}

pub async fn run(config: RunConfig, cancel: watch::Receiver<bool>) -> anyhow::Result<RunOutcome> {
    if config.clients == 0 || config.clients > CLIENTS_MAX {
        bail!("--clients must be 1..={CLIENTS_MAX}");
    }
    if !(1.0..=RUN_SECONDS_MAX).contains(&config.run_seconds) {
        bail!("--seconds must be 1..={RUN_SECONDS_MAX}");
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let tool = ComposeTool::detect()?;
    let steps = schedule(&config.schedule, config.run_seconds, &mut rng)?;
    check_host_tools(steps.iter().any(|s| s.faults.iter().any(|f| f.is_partition())))?;
    let clock_hook = config
        .node_env
        .iter()
        .any(|l| l.starts_with("SPENDCAP_FAULT=") && l.contains("clock"));
    if steps.iter().any(|s| s.faults.iter().any(|f| f.is_clock())) && !clock_hook {
        bail!(
            "schedule {} moves clocks: it needs the fault-injection image and --node-env SPENDCAP_FAULT=clock",
            config.schedule
        );
    }

    let tag = hex(&mut rng, 4);
    let project = format!("spendcapjepsen{}{}", std::process::id(), tag);
    let dir = config.results_dir.join(format!(
        "{}-{}{}-{tag}",
        wall_ms() / 1000,
        config.schedule,
        if config.expect_invalid { "-expect-invalid" } else { "" }
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = hex(&mut rng, 24);
    let env_file = dir.join("compose.env");
    // Nodes with peers require a peer token on Raft RPCs.
    let peer_token = hex(&mut rng, 24);
    let mut env = format!("SPENDCAP_ADMIN_TOKEN={token}\nSPENDCAP_PEER_TOKEN={peer_token}\n");
    for line in &config.node_env {
        env.push_str(line);
        env.push('\n');
    }
    std::fs::write(&env_file, env)?;
    let env_file = std::fs::canonicalize(&env_file)?;
    let compose_file = std::fs::canonicalize(&config.compose_file)
        .with_context(|| format!("compose file {}", config.compose_file.display()))?;

    let compose = Compose {
        tool,
        project: project.clone(),
        file: compose_file,
        env_file,
        image: config.image.clone(),
        ports: free_ports()?,
    };
    eprintln!(
        "run {}: project {project}, image {}, schedule {}, ports {:?}",
        dir.display(),
        config.image,
        config.schedule,
        compose.ports
    );
    let mut guard = TeardownGuard::new(compose.clone());
    {
        let c = compose.clone();
        tokio::task::spawn_blocking(move || c.up()).await??;
    }
    let api = Api::new(&compose.ports, &token, Duration::from_millis(config.request_timeout_ms))?;
    let leader = wait_for_cluster(
        &api,
        Instant::now() + Duration::from_secs(config.cluster_up_seconds_max),
    )
    .await
    .context("the cluster never formed")?;
    eprintln!("cluster up, leader node{leader}");

    let workload = WorkloadConfig {
        clients: config.clients,
        seed_sessions: config.seed_sessions,
        operations_max: config.operations_max,
        unknown_retries_max: 3,
        seed: config.seed,
    };
    let setup_started = Instant::now();
    let mut setup = setup(&api, &workload, Instant::now() + Duration::from_secs(120)).await?;
    eprintln!(
        "setup: {} budgets, {} sessions in {:.1} s",
        setup.budgets.len(),
        setup.sessions.len(),
        setup_started.elapsed().as_secs_f64()
    );

    let recorder = Arc::new(Recorder::new());
    setup.start_wall_ms = recorder.start_wall_ms;
    let mut nemesis = Nemesis::new(&compose, api.clone(), config.seed, &dir)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(config.run_seconds);
    let ctx = Arc::new(Ctx::new(
        api.clone(),
        recorder.clone(),
        workload,
        deadline,
        cancel.clone(),
    ));
    let clients = tokio::spawn(run_clients(ctx, setup.budgets.clone()));
    let nemesis_result = run_schedule(&mut nemesis, &steps, recorder.clone(), deadline, cancel.clone()).await;
    // The clients stop at the deadline by themselves; bound the wait anyway.
    let wait = Duration::from_secs_f64(config.run_seconds) + Duration::from_secs(60);
    let _ = tokio::time::timeout(wait, clients).await;
    let mut notes = Vec::new();
    if let Err(e) = nemesis_result {
        notes.push(format!("nemesis error: {e:#}"));
    }
    if *cancel.borrow() {
        bail!("cancelled");
    }

    // Heal everything before the final read.
    let mut healed = false;
    for _ in 0..3 {
        match nemesis.heal().await {
            Ok(()) => {
                healed = true;
                break;
            }
            Err(e) => notes.push(format!("healing: {e:#}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !healed {
        notes.push("the cluster could not be healed".into());
    }
    eprintln!("healed; waiting for the cluster");
    if let Err(e) = wait_for_cluster(&api, Instant::now() + Duration::from_secs(90)).await {
        notes.push(format!("after healing: {e:#}"));
    }
    let (tried, resolved) = resolve_unknowns(&api, &recorder, Instant::now() + Duration::from_secs(90)).await;
    eprintln!("resolved {resolved} of {tried} unknown operations by retrying their keys");
    settle_expiry(&api, &recorder, Duration::from_secs(10)).await;
    eprintln!("final read");
    let final_state = final_read(&api, &setup, &recorder).await;
    if let Err(e) = compose.logs(&dir.join("cluster.log")) {
        notes.push(format!("could not save the cluster's logs: {e:#}"));
    }
    guard.teardown();

    let (mut ops, nemesis_intervals) = recorder.snapshot();
    ops.sort_by_key(|o| o.id);
    let history = History {
        setup,
        ops,
        nemesis: nemesis_intervals,
    };
    // Checking is CPU work: off the async threads, so a signal still ends
    // the run at once.
    let out_dir = dir.clone();
    let summary =
        tokio::task::spawn_blocking(move || finish(&out_dir, &history, Some(&final_state), &config, &project, notes))
            .await
            .context("checking task")??;
    Ok(RunOutcome { dir, summary })
}

/// Writes the results folder and checks the history.
pub fn finish(
    dir: &Path,
    history: &History,
    final_state: Option<&crate::final_state::FinalState>,
    config: &RunConfig,
    project: &str,
    notes: Vec<String>,
) -> anyhow::Result<Summary> {
    std::fs::write(dir.join("setup.json"), serde_json::to_vec_pretty(&history.setup)?)?;
    history.write_jsonl(&dir.join("history.jsonl"))?;
    if let Some(fs) = final_state {
        std::fs::write(dir.join("final-state.json"), serde_json::to_vec_pretty(fs)?)?;
    }
    let report = check_all(history, final_state, config.check);
    let valid = report.valid;
    let caught = report.found_safety_violation();
    let duration = history.ops.iter().map(|o| o.complete_ns).max().unwrap_or(0) as f64 / 1e9;
    let title = format!("spendcap {} — {} — valid: {valid}", config.schedule, config.image);
    let mut notes = notes;
    if let Err(e) = latency_chart(&dir.join("latency.svg"), history, &title) {
        notes.push(format!("chart: {e:#}"));
    }
    let summary = Summary {
        valid,
        expect_invalid: config.expect_invalid,
        passed: if config.expect_invalid { !valid && caught } else { valid },
        schedule: config.schedule.clone(),
        image: config.image.clone(),
        project: project.to_string(),
        fault_env: (!config.node_env.is_empty()).then(|| config.node_env.join(" ")),
        clients: config.clients,
        duration_seconds: (duration * 10.0).round() / 10.0,
        operations: counts(history),
        approvals: approval_share(history),
        unknown: unknown_summary(history),
        faults: fault_summary(history),
        checkers: report,
        notes,
    };
    let text = write_summary(dir, &summary)?;
    eprintln!("{text}");
    eprintln!("results: {}", dir.display());
    Ok(summary)
}

/// Re-checks a saved results folder.
pub fn recheck(dir: &Path, check: CheckOptions) -> anyhow::Result<bool> {
    let setup = serde_json::from_slice(&std::fs::read(dir.join("setup.json")).context("setup.json")?)?;
    let history = History::read_jsonl(&dir.join("history.jsonl"), setup)?;
    let final_state: Option<crate::final_state::FinalState> = match std::fs::read(dir.join("final-state.json")) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes)?),
        Err(_) => None,
    };
    let report = check_all(&history, final_state.as_ref(), check);
    for v in &report.verdicts {
        println!(
            "{:26} {}",
            v.checker,
            if v.valid {
                "valid".to_string()
            } else {
                format!("INVALID ({} violations)", v.violation_count)
            }
        );
        for x in &v.violations {
            println!("    - {x}");
        }
    }
    println!("valid: {}", report.valid);
    Ok(report.valid)
}
