//! spendcap-jepsen: the Jepsen-style fault suite for a three-node spendcap
//! cluster in docker-compose.
//!
//! `spendcap-jepsen run` brings up a fresh cluster under a unique compose
//! project, runs concurrent clients against all three nodes while a nemesis
//! partitions, kills, pauses and restarts nodes, heals, resolves every
//! unknown outcome, reads the final state from every node, checks the
//! history and writes a results folder. Exit: 0 when the run met its
//! expectation (valid, or invalid with `--expect-invalid`), 1 when it did
//! not, 2 when the harness itself failed, 130 when interrupted.
//!
//! `spendcap-jepsen check DIR` re-checks a saved results folder.

mod checker;
mod client;
mod compose;
mod final_state;
mod history;
mod model;
mod nemesis;
mod report;
mod run;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::checker::CheckOptions;

#[derive(Parser, Debug)]
#[command(
    name = "spendcap-jepsen",
    about = "Jepsen-style fault suite for a three-node spendcap cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One run against a fresh compose cluster.
    Run(RunArgs),
    /// Re-check a results folder (history.jsonl, setup.json, final-state.json).
    Check {
        dir: PathBuf,
        #[arg(long, default_value_t = 250)]
        clock_slack_ms: u64,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The node image (built by cluster/build-image.sh).
    #[arg(long, default_value = "spendcap:test")]
    image: String,
    /// The compose file of the cluster.
    #[arg(long, default_value = "docker-compose.yml")]
    compose_file: PathBuf,
    /// partitions, crashes, mixed, random (for soaks) or none.
    #[arg(long, default_value = "mixed")]
    schedule: String,
    /// Length of the workload phase, seconds.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Concurrent logical clients (10-50 is the intended range).
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Sessions of the seed workload (each gets a burst of 8 operations).
    #[arg(long, default_value_t = 1000)]
    seed_sessions: usize,
    /// Stop issuing new operations after this many.
    #[arg(long, default_value_t = 100_000)]
    operations_max: u64,
    /// Client-side timeout of one request; past it the outcome is unknown.
    #[arg(long, default_value_t = 1500)]
    request_timeout_ms: u64,
    /// Where results folders go.
    #[arg(long, default_value = "jepsen-style-tests/results")]
    results_dir: PathBuf,
    /// The image is a fault build: the run passes only when found invalid.
    #[arg(long)]
    expect_invalid: bool,
    /// Extra NAME=VALUE for the nodes' environment (repeatable), e.g.
    /// SPENDCAP_FAULT=local-decide.
    #[arg(long = "node-env")]
    node_env: Vec<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the cluster may take to form.
    #[arg(long, default_value_t = 120)]
    cluster_up_seconds_max: u64,
    /// Tolerance between the log clock and the harness clock.
    #[arg(long, default_value_t = 250)]
    clock_slack_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { dir, clock_slack_ms } => {
            let check = CheckOptions {
                clock_slack_ms,
                ..CheckOptions::default()
            };
            match run::recheck(&dir, check) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run(args) => run_command(args),
    }
}

fn run_command(args: RunArgs) -> ExitCode {
    for line in &args.node_env {
        if !line.contains('=') || line.contains('\n') {
            eprintln!("--node-env takes NAME=VALUE, got {line:?}");
            return ExitCode::from(2);
        }
    }
    let config = run::RunConfig {
        image: args.image,
        compose_file: args.compose_file,
        schedule: args.schedule,
        run_seconds: args.seconds,
        clients: args.clients,
        seed_sessions: args.seed_sessions,
        operations_max: args.operations_max,
        request_timeout_ms: args.request_timeout_ms,
        results_dir: args.results_dir,
        expect_invalid: args.expect_invalid,
        node_env: args.node_env,
        seed: args.seed,
        cluster_up_seconds_max: args.cluster_up_seconds_max,
        check: CheckOptions {
            clock_slack_ms: args.clock_slack_ms,
            ..CheckOptions::default()
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async move {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("interrupted: stopping and tearing the cluster down");
            let _ = cancel_tx.send(true);
            // A second signal ends the process now.
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            std::process::exit(130);
        });
        let expect_invalid = config.expect_invalid;
        let mut cancelled = cancel_rx.clone();
        // A cancel drops the run, whose teardown guard removes the cluster.
        let result = tokio::select! {
            r = run::run(config, cancel_rx) => r,
            _ = async { while !*cancelled.borrow() { if cancelled.changed().await.is_err() { break; } } } => {
                Err(anyhow::anyhow!("cancelled"))
            }
        };
        match result {
            Ok(outcome) => {
                eprintln!("results folder: {}", outcome.dir.display());
                if outcome.summary.passed {
                    ExitCode::SUCCESS
                } else {
                    if expect_invalid {
                        eprintln!("the fault build was NOT caught: the run was valid");
                    } else {
                        eprintln!("the run is INVALID");
                    }
                    ExitCode::from(1)
                }
            }
            Err(e) if e.to_string() == "cancelled" => ExitCode::from(130),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    });
    // Do not wait for a checker still running after an interrupt.
    runtime.shutdown_background();
    code
}
