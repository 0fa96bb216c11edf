//! `spendcap`: the server (`serve`) and a CLI for its API.

mod backup;
mod cli;
mod gateway_cmd;
mod process;
mod receipts;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc: the node allocates many small, short-lived objects across
/// threads (requests, batches, records); glibc's malloc showed up as a
/// fifth of the node's user time in profiles (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "spendcap",
    version,
    about = "Spending limits for AI agents as a replicated authorization primitive"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no flags: a single-node cluster in ./spendcap-data).
    Serve(serve::ServeArgs),
    /// Exit 0 when the node at --api is ready (for container health checks).
    Health(cli::HealthArgs),
    /// Write a consistent, checksummed backup of the cluster's state.
    Backup(backup::BackupArgs),
    /// Build a new node's data directory from a backup (offline).
    Restore(backup::RestoreArgs),
    /// Run the x402 gateway: agents fetch paid APIs through it, within
    /// their session's caps.
    Gateway(gateway_cmd::GatewayArgs),
    #[command(flatten)]
    Api(cli::ApiCommand),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spendcap: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match args.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Health(a) => cli::health(a).await,
            Command::Backup(a) => backup::backup(a).await,
            Command::Restore(a) => backup::restore(a),
            Command::Gateway(a) => gateway_cmd::run(a).await,
            Command::Api(c) => cli::run(c).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spendcap: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
