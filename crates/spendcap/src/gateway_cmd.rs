//! `spendcap gateway`: the x402 gateway (see the `gateway` crate), and with
//! `--demo-merchant` the test merchant beside it, for trying it out;
//! `spendcap gateway reconcile --list`: the holds left pinned for
//! reconciliation, with their `validBefore`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use gateway::config::{parse_asset, Secret, MAX_TIMEOUT_SECONDS_DEFAULT};
use gateway::{AllowedAsset, Gateway, GatewayConfig, HostPattern, KeyRing, Limits, ToolRule, UpstreamPolicy};
use x402::X402Version;
use x402_merchant::{Merchant, MerchantConfig, RouteConfig};

use crate::process::{init_logs, shutdown_signal, LogFormat};

/// Inline wallet keys (the key-file format; `;` separates entries). Read
/// from the environment only, never from the command line.
const KEYS_ENV: &str = "SPENDCAP_GATEWAY_KEYS";

#[derive(Args)]
pub struct GatewayArgs {
    #[command(subcommand)]
    command: Option<GatewayCommand>,
    /// Where agents reach the gateway.
    #[arg(long, env = "SPENDCAP_GATEWAY_LISTEN", default_value = "127.0.0.1:7800")]
    listen: SocketAddr,
    /// Ledger API base URL; repeat or comma-separate for several nodes.
    #[arg(
        long = "ledger",
        env = "SPENDCAP_GATEWAY_LEDGER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    ledgers: Vec<String>,
    /// The gateway's own ledger credential: the nodes' --gateway-token. It
    /// pins, captures and voids holds; agents' session tokens only
    /// authenticate them and authorize. Required (or --gateway-token-file).
    #[arg(long, env = "SPENDCAP_GATEWAY_TOKEN", hide_env_values = true, global = true)]
    gateway_token: Option<String>,
    /// A file holding the gateway token (mode 0600).
    #[arg(long, env = "SPENDCAP_GATEWAY_TOKEN_FILE", global = true)]
    gateway_token_file: Option<PathBuf>,
    /// Upstreams the gateway may fetch, comma-separated: `api.example.com`,
    /// `*.example.com` (subdomains), `203.0.113.7`, `[2001:db8::1]`, each
    /// optionally `:PORT`. Empty: every fetch is refused.
    #[arg(
        long = "upstream-allow",
        env = "SPENDCAP_GATEWAY_UPSTREAM_ALLOW",
        value_delimiter = ','
    )]
    upstream_allow: Vec<String>,
    /// Any host passes the allowlist (addresses are still checked). Demos
    /// only.
    #[arg(long, env = "SPENDCAP_GATEWAY_UPSTREAM_ALLOW_ANY")]
    upstream_allow_any: bool,
    /// Loopback, private, link-local ... addresses may be fetched (the
    /// ledger nodes' and the gateway's own sockets stay refused). Tests and
    /// local demos only.
    #[arg(long, env = "SPENDCAP_GATEWAY_UPSTREAM_ALLOW_PRIVATE")]
    upstream_allow_private: bool,
    /// Which tool a payment is charged to, by upstream, comma-separated
    /// `HOST[:PORT][/PATH-PREFIX]=TOOL` (the most specific match wins);
    /// unmatched upstreams are charged to their `host[:port]`.
    #[arg(long = "tool-map", env = "SPENDCAP_GATEWAY_TOOL_MAP", value_delimiter = ',')]
    tool_map: Vec<String>,
    /// The longest payment window signed: requirements whose
    /// maxTimeoutSeconds is above it are refused before anything is held.
    #[arg(long, env = "SPENDCAP_GATEWAY_MAX_TIMEOUT_SECONDS", default_value_t = MAX_TIMEOUT_SECONDS_DEFAULT)]
    max_timeout_seconds: u64,
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

#[derive(Subcommand)]
enum GatewayCommand {
    /// Holds left pinned for reconciliation (a signed payment left without
    /// a confirmed settlement), with what to ask the chain and their
    /// validBefore. Uses --ledger and the gateway token.
    Reconcile(ReconcileArgs),
}

#[derive(Args)]
struct ReconcileArgs {
    /// List the pinned holds as JSON (the only action: capturing or voiding
    /// one is an operator's decision after checking the chain, with
    /// `spendcap capture` / `spendcap void`).
    #[arg(long)]
    list: bool,
}

/// The gateway token from the flag/env or the file.
fn gateway_token(a: &GatewayArgs) -> anyhow::Result<String> {
    match (&a.gateway_token, &a.gateway_token_file) {
        (Some(_), Some(_)) => bail!("give --gateway-token or --gateway-token-file, not both"),
        (Some(t), None) => Ok(t.trim().to_string()),
        (None, Some(path)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .with_context(|| format!("--gateway-token-file {}", path.display()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    bail!(
                        "--gateway-token-file {}: mode {:o} lets others read it; chmod 600 it",
                        path.display(),
                        mode & 0o777
                    );
                }
            }
            let text =
                std::fs::read_to_string(path).with_context(|| format!("--gateway-token-file {}", path.display()))?;
            Ok(text.trim().to_string())
        }
        (None, None) => bail!(
            "the gateway needs its own ledger credential: --gateway-token (or $SPENDCAP_GATEWAY_TOKEN, or \
             --gateway-token-file), the same value the nodes were started with"
        ),
    }
}

/// The trimmed, non-empty values of a repeatable, comma-separated flag.
fn items(values: &[String]) -> impl Iterator<Item = &str> {
    values.iter().map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn ledger_urls(a: &GatewayArgs) -> Vec<String> {
    items(&a.ledgers).map(str::to_string).collect()
}

fn config(a: &GatewayArgs) -> anyhow::Result<GatewayConfig> {
    let assets = if a.assets.is_empty() {
        vec![AllowedAsset::base_sepolia_usdc(
            decimal::parse_decimal(&a.payment_max, 6).context("--payment-max")?,
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
    let allow = items(&a.upstream_allow)
        .map(HostPattern::parse)
        .collect::<Result<Vec<_>, _>>()
        .context("--upstream-allow")?;
    let tool_map = items(&a.tool_map)
        .map(ToolRule::parse)
        .collect::<Result<Vec<_>, _>>()
        .context("--tool-map")?;
    let config = GatewayConfig {
        ledger_urls: ledger_urls(a),
        assets,
        hold_seconds: a.hold_seconds,
        gateway_token: Secret::new(gateway_token(a)?),
        max_timeout_seconds: a.max_timeout_seconds,
        upstreams: UpstreamPolicy {
            allow,
            allow_any: a.upstream_allow_any,
            allow_private: a.upstream_allow_private,
        },
        tool_map,
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
    init_logs(a.log_format, "info");
    if let Some(GatewayCommand::Reconcile(r)) = &a.command {
        return reconcile(&a, r).await;
    }
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
            decimal::format_decimal(asset.payment_max_atomic, asset.decimals, decimal::API_PLACES_MIN)
        );
    }
    for address in keys.addresses() {
        eprintln!("spendcap: signs for wallet {address}");
    }
    let upstreams = &config.upstreams;
    if upstreams.refuses_everything() {
        eprintln!(
            "spendcap: WARNING: no upstream is allowed, so every fetch is refused (upstream_not_allowed); \
             give --upstream-allow HOST,*.DOMAIN,..."
        );
    } else if upstreams.allow_any {
        eprintln!("spendcap: WARNING: --upstream-allow-any: any host may be fetched (demos only)");
    } else {
        let list: Vec<String> = upstreams.allow.iter().map(|p| p.to_string()).collect();
        eprintln!("spendcap: fetches only {}", list.join(", "));
    }
    if upstreams.allow_private {
        eprintln!(
            "spendcap: WARNING: --upstream-allow-private: loopback and private addresses may be fetched \
             (tests and local demos only)"
        );
    } else if merchant.is_some() {
        eprintln!(
            "spendcap: the demo merchant is on 127.0.0.1: add --upstream-allow 127.0.0.1 --upstream-allow-private \
             to reach it"
        );
    }
    eprintln!(
        "spendcap: signs payment windows (maxTimeoutSeconds) of at most {} s",
        config.max_timeout_seconds
    );
    for rule in &config.tool_map {
        eprintln!("spendcap: tool map: {rule}");
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

/// `spendcap gateway reconcile --list`.
async fn reconcile(a: &GatewayArgs, r: &ReconcileArgs) -> anyhow::Result<()> {
    if !r.list {
        bail!("say what to do: --list (capturing or voiding is `spendcap capture` / `spendcap void`)");
    }
    let token = gateway_token(a)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut last = None;
    for url in ledger_urls(a) {
        let client = client::Client::with_timeout(&url, Some(token.clone()), Duration::from_secs(10))?;
        match gateway::reconcile::list_pinned(&client, now).await {
            Ok(holds) => {
                let expired = holds.iter().filter(|h| h.expired == Some(true)).count();
                println!("{}", serde_json::to_string_pretty(&holds)?);
                eprintln!(
                    "spendcap: {} pinned holds, {expired} past validBefore (void those only if the chain shows no \
                     transfer for their nonce; capture those that were paid)",
                    holds.len()
                );
                return Ok(());
            }
            Err(e @ client::ClientError::Unreachable(_)) => last = Some(e),
            Err(e) => return Err(e).context(format!("listing pinned holds at {url}")),
        }
    }
    match last {
        Some(e) => Err(e).context("no ledger node could be reached"),
        None => bail!("no ledger URL"),
    }
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
            decimal::format_decimal(price, 6, decimal::API_PLACES_MIN)
        );
    }
    Ok(merchant)
}
