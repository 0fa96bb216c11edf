//! spendcap: three real node processes on 127.0.0.1 with RocksDB on disk
//! (fsync on), forming their cluster from `--initial-members`. Accounts are
//! sessions created with `POST /v1/sessions`; an authorization is `POST
//! /v1/sessions/{id}/authorizations`, a batch `POST /v1/batch/authorize`.
//! A denial is an answer like an approval; `503` and `504` are errors.
//!
//! Approved authorizations stay held (`hold_seconds`, by default longer
//! than any run) so that after a run `spent + held` of each session equals
//! what the harness saw approved.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::{
    AuthorizeRequest, BatchAuthorizeItem, BatchAuthorizeRequest, BatchAuthorizeResponse, BatchItemResult,
    ClusterStatus, CreateSessionRequest, CreateSessionResponse, Decision, SessionView,
};
use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::driver::{free_ports, http_client, wait_until, BatchItem, Driver, Outcome};
use crate::error::{BenchError, Result};
use crate::money::{parse_decimal, to_decimal};
use crate::procs::ServerProcess;
use crate::tracker::StoredAccount;
use crate::workload::AccountSet;

/// Nodes in the cluster.
pub const NODES: usize = 3;
/// Seconds the cluster gets to elect a leader that every node agrees on.
const READY_SECONDS_MAX: u64 = 90;
/// Sessions created or read at once during setup and verification.
const SETUP_PARALLEL_MAX: usize = 64;
/// Tries per setup request that got `503 no_leader`.
const SETUP_ATTEMPTS_MAX: u32 = 50;
/// Pause between those tries.
const SETUP_RETRY_MILLIS: u64 = 100;
/// Session lifetime: far longer than any run.
const SESSION_LIFETIME_SECONDS: u64 = 7 * 24 * 3600;
/// The tool every benchmark authorization names.
const TOOL: &str = "bench";
const AGENT: &str = "spendcap-bench";

/// Which nodes get the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// Round-robin over every node (followers forward to the leader).
    AllNodes,
    /// The current leader only.
    LeaderOnly,
}

/// Which bearer token single authorizations carry (batches always need the
/// admin token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// Each session's own token, as an agent would send it.
    Session,
    /// The admin token.
    Admin,
}

/// A running three-node cluster.
pub struct SpendcapCluster {
    pub nodes: Vec<ServerProcess>,
    pub api_urls: Vec<String>,
    pub admin_token: String,
    http: reqwest::Client,
}

impl SpendcapCluster {
    pub async fn start(binary: &Path, root: &Path, log_dir: &Path, admin_token: &str, label: &str) -> Result<Self> {
        if !binary.exists() {
            return Err(BenchError::Config(format!(
                "no spendcap binary at {} (build it with `cargo build --release -p spendcap`)",
                binary.display()
            )));
        }
        let ports = free_ports(2 * NODES)?;
        let api: Vec<String> = (0..NODES).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
        let raft: Vec<String> = (0..NODES).map(|i| format!("127.0.0.1:{}", ports[NODES + i])).collect();
        let members = (0..NODES)
            .map(|i| format!("{}={}/{}", i + 1, raft[i], api[i]))
            .collect::<Vec<_>>()
            .join(",");
        let peer_token = format!("bench-peer-{admin_token}");
        let mut nodes = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let id = i + 1;
            let mut command = Command::new(binary);
            command
                .arg("serve")
                .arg("--id")
                .arg(id.to_string())
                .arg("--data-dir")
                .arg(root.join(format!("node{id}")))
                .arg("--api-listen")
                .arg(&api[i])
                .arg("--raft-listen")
                .arg(&raft[i])
                .arg("--initial-members")
                .arg(&members)
                .arg("--admin-token")
                .arg(admin_token)
                // Nodes with peers require a peer token on Raft RPCs.
                .env("SPENDCAP_PEER_TOKEN", &peer_token);
            if std::env::var_os("RUST_LOG").is_none() {
                command.env("RUST_LOG", "warn");
            }
            nodes.push(ServerProcess::start(format!("{label}-node{id}"), command, log_dir)?);
        }
        let cluster = Self {
            nodes,
            api_urls: api.iter().map(|a| format!("http://{a}")).collect(),
            admin_token: admin_token.to_string(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?,
        };
        let ready = wait_until(
            "spendcap cluster",
            READY_SECONDS_MAX,
            Duration::from_millis(200),
            || async { cluster.agreed_leader().await },
        )
        .await;
        let mut cluster = cluster;
        for node in &mut cluster.nodes {
            node.check_running()?;
        }
        ready?;
        Ok(cluster)
    }

    async fn status(&self, url: &str) -> std::result::Result<ClusterStatus, String> {
        self.http
            .get(format!("{url}/v1/cluster/status"))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }

    /// The leader's API URL, once every node names the same leader.
    async fn agreed_leader(&self) -> std::result::Result<String, String> {
        let mut leader = None;
        let mut members = Vec::new();
        for url in &self.api_urls {
            let status = self.status(url).await.map_err(|e| format!("{url}: {e}"))?;
            let id = status.leader_id.ok_or_else(|| format!("{url}: no leader yet"))?;
            if leader.is_some_and(|l| l != id) {
                return Err("nodes disagree on the leader".into());
            }
            leader = Some(id);
            members = status.members;
        }
        let id = leader.ok_or("no nodes")?;
        let member = members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| format!("leader {id} is not among the members"))?;
        Ok(format!("http://{}", member.api_addr))
    }

    /// The current leader's API URL.
    pub async fn leader_url(&self) -> Result<String> {
        wait_until("spendcap leader", 30, Duration::from_millis(200), || async {
            self.agreed_leader().await
        })
        .await
    }

    pub fn roots(&self) -> Vec<(String, u32)> {
        self.nodes.iter().map(|n| (n.label.clone(), n.pid())).collect()
    }
}

/// Session tokens by set name, kept across the per-run drivers.
#[derive(Debug, Default)]
pub struct SessionTokens(RwLock<HashMap<String, Arc<Vec<Option<String>>>>>);

impl SessionTokens {
    fn get(&self, set: &str) -> Option<Arc<Vec<Option<String>>>> {
        self.0.read().ok()?.get(set).cloned()
    }

    fn put(&self, set: &str, tokens: Vec<Option<String>>) {
        if let Ok(mut map) = self.0.write() {
            map.insert(set.to_string(), Arc::new(tokens));
        }
    }
}

/// The settings a driver needs beyond its endpoints.
#[derive(Clone, Debug)]
pub struct DriverSettings {
    pub admin_token: String,
    pub token_mode: TokenMode,
    pub hold_seconds: u64,
    pub request_timeout: Duration,
}

pub struct SpendcapDriver {
    http: reqwest::Client,
    endpoints: Vec<String>,
    next: AtomicUsize,
    settings: DriverSettings,
    tokens: Arc<SessionTokens>,
}

fn status_failure(status: StatusCode) -> Outcome {
    match status.as_u16() {
        503 => Outcome::failed("http_503", false),
        504 => Outcome::failed("http_504", true),
        429 => Outcome::failed("http_429", false),
        400 => Outcome::failed("http_400", false),
        401 | 403 => Outcome::failed("http_401_403", false),
        404 => Outcome::failed("http_404", false),
        409 => Outcome::failed("http_409", false),
        500..=599 => Outcome::failed("http_5xx", true),
        _ => Outcome::failed("http_other", false),
    }
}

fn transport_failure(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::failed("timeout", true)
    } else if e.is_connect() {
        Outcome::failed("connection", false)
    } else if e.is_decode() {
        Outcome::failed("protocol", true)
    } else {
        Outcome::failed("http", true)
    }
}

fn decision_outcome(d: &Decision) -> Outcome {
    match d.decision.as_str() {
        "approved" => Outcome::Approved,
        "denied" => Outcome::Denied,
        _ => Outcome::failed("protocol", true),
    }
}

impl SpendcapDriver {
    pub fn connect(
        endpoints: Vec<String>,
        parallelism: usize,
        settings: DriverSettings,
        tokens: Arc<SessionTokens>,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(BenchError::Config("no spendcap endpoints".into()));
        }
        let http = http_client(parallelism, settings.request_timeout)?;
        Ok(Self {
            http,
            endpoints,
            next: AtomicUsize::new(0),
            settings,
            tokens,
        })
    }

    fn endpoint(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }

    async fn create_session(&self, set: &AccountSet, index: usize) -> Result<Option<String>> {
        let body = CreateSessionRequest {
            id: Some(set.key(index)),
            cap: to_decimal(set.cap_atomic),
            expires_in_seconds: Some(SESSION_LIFETIME_SECONDS),
            agent_id: AGENT.to_string(),
            // Chosen here so a retry after a timeout is a replay that
            // answers with this (working) token rather than a 409.
            token: Some(format!(
                "sct_{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            )),
            ..CreateSessionRequest::default()
        };
        let mut last = String::new();
        for _ in 0..SETUP_ATTEMPTS_MAX {
            let sent = self
                .http
                .post(format!("{}/v1/sessions", self.endpoint()))
                .bearer_auth(&self.settings.admin_token)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    let created: CreateSessionResponse = r.json().await?;
                    return Ok(created.session_token);
                }
                Ok(r) if matches!(r.status().as_u16(), 503 | 504 | 429) => {
                    last = format!("{}", r.status());
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(BenchError::protocol(
                        "spendcap",
                        format!("creating session {}: {status} {text}", set.key(index)),
                    ));
                }
                Err(e) if e.is_timeout() || e.is_connect() => last = e.to_string(),
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(SETUP_RETRY_MILLIS)).await;
        }
        Err(BenchError::protocol(
            "spendcap",
            format!("creating session {} kept failing: {last}", set.key(index)),
        ))
    }

    async fn read_session(&self, set: &AccountSet, index: usize) -> Result<Option<StoredAccount>> {
        let r = self
            .http
            .get(format!("{}/v1/sessions/{}", self.endpoint(), set.key(index)))
            .bearer_auth(&self.settings.admin_token)
            .send()
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let view: SessionView = r.error_for_status()?.json().await?;
        let used = parse_decimal(&view.spent)?
            .checked_add(parse_decimal(&view.held)?)
            .ok_or_else(|| BenchError::Amount(format!("{} + {}", view.spent, view.held)))?;
        Ok(Some(StoredAccount {
            cap_atomic: parse_decimal(&view.cap)?,
            used_atomic: used,
        }))
    }
}

impl Driver for SpendcapDriver {
    async fn create_accounts(&self, set: &AccountSet) -> Result<()> {
        let tokens: Vec<Option<String>> = futures::stream::iter(0..set.count)
            .map(|i| self.create_session(set, i))
            .buffered(SETUP_PARALLEL_MAX)
            .try_collect()
            .await?;
        self.tokens.put(&set.name, tokens);
        Ok(())
    }

    async fn authorize(&self, _worker: usize, set: &AccountSet, account: usize, amount_atomic: u64) -> Outcome {
        let session_token = match self.settings.token_mode {
            TokenMode::Session => self
                .tokens
                .get(&set.name)
                .and_then(|t| t.get(account).cloned().flatten()),
            TokenMode::Admin => None,
        };
        let token = session_token.as_deref().unwrap_or(&self.settings.admin_token);
        let body = AuthorizeRequest {
            amount: Some(to_decimal(amount_atomic)),
            tool: TOOL.to_string(),
            hold_seconds: Some(self.settings.hold_seconds),
            ..AuthorizeRequest::default()
        };
        let sent = self
            .http
            .post(format!(
                "{}/v1/sessions/{}/authorizations",
                self.endpoint(),
                set.key(account)
            ))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return transport_failure(&e),
        };
        if !response.status().is_success() {
            return status_failure(response.status());
        }
        match response.json::<Decision>().await {
            Ok(d) => decision_outcome(&d),
            Err(e) => transport_failure(&e),
        }
    }

    async fn authorize_batch(&self, _worker: usize, set: &AccountSet, items: &[BatchItem]) -> Vec<Outcome> {
        let all = |o: Outcome| vec![o; items.len()];
        let body = BatchAuthorizeRequest {
            items: items
                .iter()
                .map(|i| BatchAuthorizeItem {
                    session_id: set.key(i.account),
                    amount: Some(to_decimal(i.amount_atomic)),
                    tool: TOOL.to_string(),
                    hold_seconds: Some(self.settings.hold_seconds),
                    ..BatchAuthorizeItem::default()
                })
                .collect(),
        };
        let sent = self
            .http
            .post(format!("{}/v1/batch/authorize", self.endpoint()))
            .bearer_auth(&self.settings.admin_token)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return all(transport_failure(&e)),
        };
        if !response.status().is_success() {
            return all(status_failure(response.status()));
        }
        let answer: BatchAuthorizeResponse = match response.json().await {
            Ok(a) => a,
            Err(e) => return all(transport_failure(&e)),
        };
        if answer.results.len() != items.len() {
            return all(Outcome::failed("protocol", true));
        }
        answer
            .results
            .iter()
            .map(|r| match r {
                BatchItemResult::Decision(d) => decision_outcome(d),
                BatchItemResult::Error { error } => match error.code.as_str() {
                    api::codes::NO_LEADER => Outcome::failed("no_leader", false),
                    api::codes::OUTCOME_UNKNOWN => Outcome::failed("outcome_unknown", true),
                    api::codes::OVERLOADED => Outcome::failed("overloaded", false),
                    _ => Outcome::failed("item_error", false),
                },
            })
            .collect()
    }

    async fn read_accounts(&self, set: &AccountSet) -> Result<Vec<Option<StoredAccount>>> {
        futures::stream::iter(0..set.count)
            .map(|i| self.read_session(set, i))
            .buffered(SETUP_PARALLEL_MAX)
            .try_collect()
            .await
    }
}

/// The default location of the release binary, relative to a target dir.
pub fn default_binary(target_dir: &Path) -> PathBuf {
    target_dir
        .join("x86_64-unknown-linux-gnu")
        .join("release")
        .join("spendcap")
}
