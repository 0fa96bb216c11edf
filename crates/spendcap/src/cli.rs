//! The CLI for the API: every command talks to one node over HTTP through
//! the typed client and prints JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use api::*;
use clap::{Args, Subcommand, ValueEnum};
use client::Client;
use serde::Serialize;

use crate::receipts;

/// Where and as whom to connect.
#[derive(Args, Clone)]
pub struct Conn {
    /// The node's API base URL.
    #[arg(long, env = "SPENDCAP_API", default_value = "http://127.0.0.1:7700")]
    api: String,
    /// Bearer token (admin or session). Default: the admin token in
    /// --data-dir, if there is one.
    #[arg(long, env = "SPENDCAP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where a local node keeps its generated admin token.
    #[arg(long = "token-dir", default_value = "./spendcap-data")]
    token_dir: PathBuf,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
}

impl Conn {
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.token {
            Some(t) => Some(t.clone()),
            None => std::fs::read_to_string(self.token_dir.join("admin-token"))
                .ok()
                .map(|t| t.trim().to_string()),
        };
        Ok(Client::with_timeout(
            &self.api,
            token,
            Duration::from_secs(self.timeout_seconds),
        )?)
    }
}

#[derive(Args)]
pub struct HealthArgs {
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
pub enum ApiCommand {
    /// Budgets: named accounts with caps (org, team, user).
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// Sessions: credentials with a cap baked in.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Ask to spend: holds the amount if every cap allows it.
    Authorize(AuthorizeArgs),
    /// Turn a hold into spend (all or part of it), with a receipt.
    Capture(CaptureArgs),
    /// Release a hold.
    Void(VoidArgs),
    /// Show an authorization.
    Authorization(IdArgs),
    /// Receipts: list or export (JSONL or CSV).
    #[command(subcommand)]
    Receipts(ReceiptsCommand),
    /// Cluster status, digests and membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Args)]
pub struct IdArgs {
    id: String,
    #[command(flatten)]
    conn: Conn,
}

/// The asset and per-tool caps of a new budget or session.
#[derive(Args)]
pub struct AssetCapsArgs {
    #[arg(long)]
    asset: Option<String>,
    #[arg(long)]
    decimals: Option<u8>,
    /// TOOL=CAP, repeatable.
    #[arg(long = "tool-cap")]
    tool_caps: Vec<String>,
}

impl AssetCapsArgs {
    fn tool_caps(&self) -> anyhow::Result<BTreeMap<String, String>> {
        self.tool_caps
            .iter()
            .map(|i| {
                i.split_once('=')
                    .map(|(t, c)| (t.to_string(), c.to_string()))
                    .with_context(|| format!("--tool-cap {i:?} is not TOOL=CAP"))
            })
            .collect()
    }
}

/// A page of a list: after this id, at most this many.
#[derive(Args)]
pub struct PageArgs {
    #[arg(long)]
    after: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Subcommand)]
pub enum BudgetCommand {
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        cap: String,
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        caps: AssetCapsArgs,
        /// Tools no session under this budget may spend on, comma-separated
        /// (default: none; at most 64).
        #[arg(long = "blocked-tools", value_delimiter = ',')]
        blocked_tools: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    Get(IdArgs),
    List {
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum SessionCommand {
    Create {
        #[arg(long)]
        cap: String,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        budget: Option<String>,
        #[arg(long)]
        wallet: Option<String>,
        #[arg(long)]
        expires_in_seconds: Option<u64>,
        #[command(flatten)]
        caps: AssetCapsArgs,
        /// The only tools the session may spend on, comma-separated
        /// (default: any tool; at most 64).
        #[arg(long, value_delimiter = ',')]
        tools: Option<Vec<String>>,
        /// Most live (held) authorizations at once (default 1000; at most
        /// 100000).
        #[arg(long)]
        live_holds_max: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    Get(IdArgs),
    Revoke(IdArgs),
    /// Issue a new session token (the old one stops working).
    RotateToken(IdArgs),
}

#[derive(Args)]
pub struct AuthorizeArgs {
    #[arg(long)]
    session: String,
    /// Decimal amount in the session's asset, e.g. 10.00.
    #[arg(long)]
    amount: String,
    #[arg(long)]
    tool: String,
    /// Idempotency key: a retry with the same key has one effect.
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    hold_seconds: Option<u64>,
    #[arg(long)]
    trace_id: Option<String>,
    #[arg(long)]
    tool_call_id: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct CaptureArgs {
    authorization_id: String,
    /// At most the held amount; default: all of it.
    #[arg(long)]
    amount: Option<String>,
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    payment_request_id: Option<String>,
    #[arg(long)]
    signature: Option<String>,
    #[arg(long)]
    transaction_hash: Option<String>,
    #[arg(long)]
    network: Option<String>,
    #[arg(long)]
    resource_url: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct VoidArgs {
    authorization_id: String,
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Args)]
pub struct ReceiptFilterArgs {
    #[arg(long)]
    session: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    tool: Option<String>,
    /// Unix milliseconds, inclusive.
    #[arg(long)]
    from_ms: Option<u64>,
    /// Unix milliseconds, exclusive.
    #[arg(long)]
    to_ms: Option<u64>,
}

impl ReceiptFilterArgs {
    fn query(&self) -> ReceiptQuery {
        ReceiptQuery {
            session_id: self.session.clone(),
            agent_id: self.agent.clone(),
            tool: self.tool.clone(),
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            after: None,
            limit: None,
        }
    }
}

#[derive(Subcommand)]
pub enum ReceiptsCommand {
    List {
        #[command(flatten)]
        filter: ReceiptFilterArgs,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        conn: Conn,
    },
    Export {
        #[command(flatten)]
        filter: ReceiptFilterArgs,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check each x402 receipt's signature: rebuild the signed EIP-3009
    /// authorization from the receipt and recover its signer, which must be
    /// the receipt's wallet. Reads an export (JSONL or CSV) or the API.
    Verify {
        /// An export file (`receipts export`, either format); default: read
        /// the API with the filters.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        filter: ReceiptFilterArgs,
        /// Also fail on receipts that are not x402 receipts.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    Digest {
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a node as a learner (send to the leader).
    AddLearner {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        api_addr: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set the voters (send to the leader), e.g. --voters 1,2,4.
    Membership {
        #[arg(long, value_delimiter = ',')]
        voters: Vec<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Build a snapshot now.
    Snapshot {
        #[command(flatten)]
        conn: Conn,
    },
}

fn print<T: Serialize>(value: &T) -> anyhow::Result<()> {
    write_stdout(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Writes to stdout; a closed pipe (`| head`) ends quietly, not in a panic.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub async fn health(a: HealthArgs) -> anyhow::Result<()> {
    let client = Client::with_timeout(&a.conn.api, None, Duration::from_secs(a.conn.timeout_seconds))?;
    let h = client.readyz().await.context("not ready")?;
    let or_none = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    println!(
        "ready: node {} leader {} applied {}",
        h.node_id,
        or_none(h.leader_id),
        or_none(h.applied_index)
    );
    Ok(())
}

pub async fn run(command: ApiCommand) -> anyhow::Result<()> {
    match command {
        ApiCommand::Budget(BudgetCommand::Create {
            id,
            cap,
            parent,
            caps,
            blocked_tools,
            conn,
        }) => print(
            &conn
                .client()?
                .create_budget(&CreateBudgetRequest {
                    id,
                    cap,
                    tool_caps: caps.tool_caps()?,
                    asset: caps.asset,
                    decimals: caps.decimals,
                    parent,
                    blocked_tools: blocked_tools.into_iter().collect(),
                })
                .await?,
        ),
        ApiCommand::Budget(BudgetCommand::Get(a)) => print(&a.conn.client()?.get_budget(&a.id).await?),
        ApiCommand::Budget(BudgetCommand::List { page, conn }) => {
            print(&conn.client()?.list_budgets(page.after.as_deref(), page.limit).await?)
        }
        ApiCommand::Session(SessionCommand::Create {
            cap,
            agent,
            id,
            budget,
            wallet,
            expires_in_seconds,
            caps,
            tools,
            live_holds_max,
            conn,
        }) => print(
            // The client picks the id and the token when none is given, so
            // its retries after an unknown outcome are exact replays.
            &conn
                .client()?
                .create_session(&CreateSessionRequest {
                    id,
                    cap,
                    tool_caps: caps.tool_caps()?,
                    asset: caps.asset,
                    decimals: caps.decimals,
                    expires_in_seconds,
                    agent_id: agent,
                    wallet_address: wallet,
                    budget,
                    tools: tools.map(|t| t.into_iter().collect()),
                    live_holds_max,
                    token: None,
                })
                .await?,
        ),
        ApiCommand::Session(SessionCommand::Get(a)) => print(&a.conn.client()?.get_session(&a.id).await?),
        ApiCommand::Session(SessionCommand::Revoke(a)) => print(&a.conn.client()?.revoke_session(&a.id).await?),
        ApiCommand::Session(SessionCommand::RotateToken(a)) => print(&a.conn.client()?.rotate_token(&a.id).await?),
        ApiCommand::Authorize(a) => {
            let context = (a.trace_id.is_some() || a.tool_call_id.is_some()).then(|| DecisionContext {
                trace_id: a.trace_id.clone(),
                tool_call_id: a.tool_call_id.clone(),
                note: None,
            });
            let decision = a
                .conn
                .client()?
                .authorize(
                    &a.session,
                    &AuthorizeRequest {
                        amount: Some(a.amount),
                        amount_atomic: None,
                        tool: a.tool,
                        idempotency_key: a.key,
                        hold_seconds: a.hold_seconds,
                        context,
                    },
                )
                .await?;
            print(&decision)
        }
        ApiCommand::Capture(a) => {
            let receipt = ReceiptFields {
                payment_request_id: a.payment_request_id,
                signature: a.signature,
                transaction_hash: a.transaction_hash,
                wallet_address: None,
                network: a.network,
                resource_url: a.resource_url,
            };
            print(
                &a.conn
                    .client()?
                    .capture(
                        &a.authorization_id,
                        &CaptureRequest {
                            amount: a.amount,
                            amount_atomic: None,
                            idempotency_key: a.key,
                            receipt: Some(receipt),
                        },
                    )
                    .await?,
            )
        }
        ApiCommand::Void(a) => print(
            &a.conn
                .client()?
                .void(&a.authorization_id, &VoidRequest { idempotency_key: a.key })
                .await?,
        ),
        ApiCommand::Authorization(a) => print(&a.conn.client()?.get_authorization(&a.id).await?),
        ApiCommand::Receipts(ReceiptsCommand::List { filter, page, conn }) => {
            let q = ReceiptQuery {
                after: page.after,
                limit: page.limit,
                ..filter.query()
            };
            print(&conn.client()?.receipts(&q).await?)
        }
        ApiCommand::Receipts(ReceiptsCommand::Export {
            filter,
            format,
            out,
            conn,
        }) => {
            let jsonl = conn.client()?.export_receipts(&filter.query()).await?;
            let text = match format {
                ExportFormat::Jsonl => jsonl,
                ExportFormat::Csv => receipts::to_csv(&jsonl)?,
            };
            match out {
                Some(path) => std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?,
                None => write_stdout(&text)?,
            }
            Ok(())
        }
        ApiCommand::Receipts(ReceiptsCommand::Verify {
            file,
            filter,
            strict,
            conn,
        }) => receipts::verify(&receipts_to_verify(file, filter, conn).await?, strict),
        ApiCommand::Cluster(ClusterCommand::Status { conn }) => print(&conn.client()?.cluster_status().await?),
        ApiCommand::Cluster(ClusterCommand::Digest { conn }) => print(&conn.client()?.cluster_digest().await?),
        ApiCommand::Cluster(ClusterCommand::AddLearner {
            id,
            raft_addr,
            api_addr,
            conn,
        }) => print(
            &conn
                .client()?
                .add_learner(&AddLearnerRequest {
                    id,
                    raft_addr,
                    api_addr,
                })
                .await?,
        ),
        ApiCommand::Cluster(ClusterCommand::Membership { voters, conn }) => {
            if voters.is_empty() {
                bail!("--voters needs at least one id");
            }
            print(
                &conn
                    .client()?
                    .change_membership(&ChangeMembershipRequest { voters })
                    .await?,
            )
        }
        ApiCommand::Cluster(ClusterCommand::Snapshot { conn }) => {
            conn.client()?.trigger_snapshot().await?;
            println!("snapshot requested");
            Ok(())
        }
    }
}

/// `receipts verify`'s input: an export file, or the API's export with the
/// filters (which do not apply to a file).
async fn receipts_to_verify(file: Option<PathBuf>, filter: ReceiptFilterArgs, conn: Conn) -> anyhow::Result<String> {
    let q = filter.query();
    match &file {
        Some(path) => {
            if q.session_id.is_some()
                || q.agent_id.is_some()
                || q.tool.is_some()
                || q.from_ms.is_some()
                || q.to_ms.is_some()
            {
                bail!("the filters apply to the API; filter the export instead");
            }
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        }
        None => Ok(conn.client()?.export_receipts(&q).await?),
    }
}
