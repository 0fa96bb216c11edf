//! `spendcap gateway`: the x402 gateway (see the `gateway` crate), and with
//! `--demo-merchant` the test merchant beside it, for trying it out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use gateway::config::{decimal_to_atomic, parse_asset};
use gateway::{AllowedAsset, Gateway, GatewayConfig, KeyRing, Limits};
use x402::X402Version;
use x402_merchant::{Merchant, MerchantConfig, RouteConfig};

/// Inline wallet keys (the key-file format; `;` separates entries). Read
/// from the environment only, never from the command line.
const KEYS_ENV: &str = "SPENDCAP_GATEWAY_KEYS";

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Args)]
pub struct GatewayArgs {
    /// Where agents reach the gateway.
    #[arg(long, env = "SPENDCAP_GATEWAY_LISTEN", default_value = "127.0.0.1:7800")]
    listen: SocketAddr,
    /// Ledger API base URL; repeat or comma-separate for several nodes.
    #[arg(
        long = "ledger",
        env = "SPENDCAP_GATEWAY_LEDGER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7700"
    )]
    ledgers: Vec<String>,
    /// Wallet key file: one `ADDRESS=HEXKEY` (or bare `HEXKEY`) per line,
    /// mode 0600. Keys may also come from $SPENDCAP_GATEWAY_KEYS.
    #[arg(long, env = "SPENDCAP_GATEWAY_KEYS_FILE")]
    keys: Option<PathBuf>,
    /// A token the gateway may pay with, as NETWORK/CONTRACT/CODE/DECIMALS
    /// (repeatable); CODE is the ledger asset of the sessions it pays for.
    /// Default: base-sepolia/0x036CbD53842c5426634e7929541eC2318f3dCF7e/USDC/6.
    #[arg(long = "asset", env = "SPENDCAP_GATEWAY_ASSETS", value_delimiter = ',')]
    assets: Vec<String>,
    /// The largest single payment, as a decimal in each asset's unit.
    #[arg(long, env = "SPENDCAP_GATEWAY_PAYMENT_MAX", default_value = "1.00")]
    payment_max: String,
    /// Lifetime of a hold before it is pinned (keep it stable across
    /// restarts: retries must send the same authorization).
    #[arg(long, env = "SPENDCAP_GATEWAY_HOLD_SECONDS", default_value_t = gateway::config::HOLD_SECONDS_DEFAULT)]
    hold_seconds: u64,
    /// How long an upstream exchange may take; after a payment was sent,
    /// running out means "outcome unknown" (the hold stays pinned).
    #[arg(long, env = "SPENDCAP_GATEWAY_UPSTREAM_TIMEOUT_MS", default_value_t = 30_000)]
    upstream_timeout_ms: u64,
    #[arg(long, env = "SPENDCAP_GATEWAY_REQUEST_BODY_BYTES_MAX", default_value_t = Limits::default().request_body_bytes_max)]
    request_body_bytes_max: usize,
    #[arg(long, env = "SPENDCAP_GATEWAY_RESPONSE_BODY_BYTES_MAX", default_value_t = Limits::default().response_body_bytes_max)]
    response_body_bytes_max: usize,
    #[arg(long, env = "SPENDCAP_GATEWAY_REQUESTS_IN_FLIGHT_MAX", default_value_t = Limits::default().requests_in_flight_max)]
    requests_in_flight_max: usize,
    /// Also run the test merchant on 127.0.0.1 (fake settlement, no chain;
    /// for the walk-through only).
    #[arg(long)]
    demo_merchant: bool,
    #[arg(long, env = "SPENDCAP_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn config(a: &GatewayArgs) -> anyhow::Result<GatewayConfig> {
    let assets = if a.assets.is_empty() {
        vec![AllowedAsset::base_sepolia_usdc(
            decimal_to_atomic(&a.payment_max, 6).context("--payment-max")?,
        )]
    } else {
        a.assets
            .iter()
            .map(|s| parse_asset(s, &a.payment_max))
            .collect::<Result<Vec<_>, _>>()
            .context("--asset")?
    };
    let limits = Limits {
        upstream_timeout: Duration::from_millis(a.upstream_timeout_ms),
        request_body_bytes_max: a.request_body_bytes_max,
        response_body_bytes_max: a.response_body_bytes_max,
        requests_in_flight_max: a.requests_in_flight_max,
        ..Limits::default()
    };
    // The agent's deadline covers the unpaid try, the paid one and the
    // ledger calls around them.
    let limits = Limits {
        request_timeout: limits
            .request_timeout
            .max(limits.upstream_timeout * 2 + limits.ledger_timeout * 4),
        ..limits
    };
    let config = GatewayConfig {
        ledger_urls: a
            .ledgers
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        assets,
        hold_seconds: a.hold_seconds,
        limits,
    };
    config.validate()?;
    Ok(config)
}

fn keys(a: &GatewayArgs) -> anyhow::Result<KeyRing> {
    let mut ring = KeyRing::new();
    if let Some(path) = &a.keys {
        ring.add_file(path)?;
    }
    if let Ok(text) = std::env::var(KEYS_ENV) {
        ring.add_text(&text).with_context(|| format!("${KEYS_ENV}"))?;
    }
    Ok(ring)
}

pub async fn run(a: GatewayArgs) -> anyhow::Result<()> {
    init_logs(a.log_format);
    let config = config(&a)?;
    let keys = keys(&a)?;
    if keys.is_empty() {
        bail!("no wallet keys: give --keys FILE or set ${KEYS_ENV}");
    }
    let merchant = if a.demo_merchant {
        Some(start_demo_merchant().await?)
    } else {
        None
    };
    for asset in &config.assets {
        eprintln!(
            "spendcap: pays {} on {} (token {}), at most {} per payment",
            asset.code,
            asset.network.v1_name(),
            asset.contract,
            gateway::config::atomic_to_decimal(asset.payment_max_atomic, asset.decimals)
        );
    }
    for address in keys.addresses() {
        eprintln!("spendcap: signs for wallet {address}");
    }
    let handle = Gateway::start(config, keys, a.listen)
        .await
        .context("starting the gateway")?;
    eprintln!("spendcap: x402 gateway on {} (POST /v1/fetch)", handle.url());
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    if let Some(m) = merchant {
        m.shutdown().await;
    }
    Ok(())
}

/// The walk-through's merchant: $10 reports in both wire versions and a
/// cent-priced quote, in Base Sepolia USDC, settled without any chain.
async fn start_demo_merchant() -> anyhow::Result<x402_merchant::MerchantHandle> {
    let config = MerchantConfig {
        routes: vec![
            RouteConfig::new("/paid/v1/report", X402Version::V1, 10_000_000),
            RouteConfig::new("/paid/v2/report", X402Version::V2, 10_000_000),
            RouteConfig::new("/paid/v2/quote", X402Version::V2, 10_000),
        ],
        ..MerchantConfig::default()
    };
    let prices: Vec<(String, X402Version, u128)> = config
        .routes
        .iter()
        .map(|r| (r.path.clone(), r.version, r.price_atomic))
        .collect();
    let merchant = Merchant::start(config).await.context("starting the demo merchant")?;
    eprintln!(
        "spendcap: demo merchant (TEST ONLY: fake settlement, no chain) on {}",
        merchant.base_url()
    );
    for (path, version, price) in prices {
        eprintln!(
            "    GET {}  x402 v{version}, {} USDC on base-sepolia",
            merchant.url(&path),
            gateway::config::atomic_to_decimal(price, 6)
        );
    }
    Ok(merchant)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
