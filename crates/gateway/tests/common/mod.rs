//! Test support: in-process ledger nodes (RocksDB in temp dirs), the test
//! merchant, a gateway, and an agent that talks to it over real HTTP.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api::{CreateSessionRequest, SessionView};
use client::Client;
use gateway::{
    AllowedAsset, FetchRequest, Gateway, GatewayConfig, GatewayHandle, HostPattern, KeyRing, UpstreamPolicy,
};
use node::{Limits, Node, NodeConfig, RaftTuning};
use serde_json::Value;
use x402::X402Version;
use x402_merchant::{Merchant, MerchantConfig, MerchantHandle, MerchantStats, RouteConfig};

pub const ADMIN_TOKEN: &str = "gateway-test-admin-token-0123456789";
/// The gateway's own ledger credential (`--gateway-token` on the nodes and
/// the gateway).
pub const GATEWAY_TOKEN: &str = "gateway-test-gateway-token-9876543210";
/// The nodes' shared Raft secret.
pub const PEER_TOKEN: &str = "gateway-test-peer-token-5555555555";
/// Hardhat/Anvil development account #0: a well-known test key, never funded.
pub const WALLET_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub const WALLET: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// Development account #1's address (the gateway holds no key for it).
pub const OTHER_WALLET: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

/// Bound on every wait; a hit means a bug, not slowness.
pub const WAIT: Duration = Duration::from_secs(30);
pub const TEN_DOLLARS: u128 = 10_000_000;
pub const V1_REPORT: &str = "/paid/v1/report";
pub const V2_REPORT: &str = "/paid/v2/report";

/// Polls `check` until it gives `Some`; panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A ledger cluster of in-process nodes.
pub struct Ledger {
    nodes: Vec<Node>,
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Ledger {
    pub async fn start(n: usize) -> Ledger {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (raft, api))| format!("{}=127.0.0.1:{raft}/127.0.0.1:{api}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, (raft, api)) in ports.iter().enumerate() {
            let api_listen: SocketAddr = format!("127.0.0.1:{api}").parse().unwrap();
            let raft_listen: SocketAddr = format!("127.0.0.1:{raft}").parse().unwrap();
            let config = NodeConfig {
                node_id: i as u64 + 1,
                cluster: "gateway-test".into(),
                data_dir: dir.path().join(format!("node{}", i + 1)),
                api_listen,
                raft_listen,
                api_advertise: api_listen.to_string(),
                raft_advertise: raft_listen.to_string(),
                initial_members: node::parse_members(&members).unwrap(),
                join: false,
                admin_token: Some(ADMIN_TOKEN.into()),
                peer_token: Some(PEER_TOKEN.into()),
                gateway_token: Some(GATEWAY_TOKEN.into()),
                limits: Limits::default(),
                raft: RaftTuning {
                    heartbeat: Duration::from_millis(50),
                    election_timeout_min: Duration::from_millis(300),
                    election_timeout_max: Duration::from_millis(600),
                    ..RaftTuning::default()
                },
            };
            nodes.push(Node::start(config).await.expect("node starts"));
        }
        let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.api_addr)).collect();
        let ledger = Ledger { nodes, urls, _dir: dir };
        for url in &ledger.urls {
            let c = Client::new(url, None).unwrap();
            eventually("a ready ledger node", || {
                let c = c.clone();
                async move { c.readyz().await.ok() }
            })
            .await;
        }
        ledger
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.urls[0], Some(ADMIN_TOKEN.into())).unwrap()
    }

    /// A node as the gateway (its own token), as a reconciler uses it.
    pub fn as_gateway(&self) -> Client {
        Client::new(&self.urls[0], Some(GATEWAY_TOKEN.into())).unwrap()
    }

    /// A node as a session (its token).
    pub fn as_session(&self, token: &str) -> Client {
        Client::new(&self.urls[0], Some(token.into())).unwrap()
    }

    /// A session with `cap` paying from `wallet`; returns (id, token).
    pub async fn session(&self, cap: &str, wallet: Option<&str>) -> (String, String) {
        self.session_with(CreateSessionRequest {
            cap: cap.into(),
            agent_id: "agent-7".into(),
            wallet_address: wallet.map(str::to_string),
            ..CreateSessionRequest::default()
        })
        .await
    }

    pub async fn session_with(&self, req: CreateSessionRequest) -> (String, String) {
        let created = self.admin().create_session(&req).await.expect("session created");
        (
            created.session.id,
            created.session_token.expect("a new session's token"),
        )
    }

    pub async fn view(&self, session_id: &str) -> SessionView {
        self.admin().get_session(session_id).await.expect("session view")
    }

    pub async fn live_holds(&self) -> u64 {
        self.admin().cluster_status().await.expect("status").live_holds
    }

    pub async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}

/// Atomic units of a decimal USDC amount as the ledger prints it.
pub fn units(decimal: &str) -> u128 {
    decimal::parse_decimal(decimal, 6).unwrap_or_else(|e| panic!("{decimal:?}: {e}"))
}

/// A merchant with $10 reports in both wire versions.
pub async fn merchant(edit: impl FnOnce(&mut MerchantConfig)) -> MerchantHandle {
    let mut config = MerchantConfig {
        routes: vec![
            RouteConfig::new(V1_REPORT, X402Version::V1, TEN_DOLLARS),
            RouteConfig::new(V2_REPORT, X402Version::V2, TEN_DOLLARS),
        ],
        ..MerchantConfig::default()
    };
    edit(&mut config);
    Merchant::start(config).await.expect("merchant starts")
}

pub async fn wait_merchant(
    m: &MerchantHandle,
    what: &str,
    condition: impl FnMut(&MerchantStats) -> bool,
) -> MerchantStats {
    tokio::time::timeout(WAIT, m.wait_for_stats(condition))
        .await
        .unwrap_or_else(|_| panic!("merchant never reached: {what}; stats {:?}", m.stats()))
}

/// The test gateway: merchants run on 127.0.0.1, so it allows that host
/// and private addresses (the ledger nodes' sockets stay refused).
pub fn gateway_config(ledger: &Ledger, payment_max: u128) -> GatewayConfig {
    let mut config = strict_gateway_config(ledger, payment_max);
    config.upstreams = UpstreamPolicy {
        allow: HostPattern::parse_list("127.0.0.1").unwrap(),
        allow_any: false,
        allow_private: true,
    };
    config
}

/// The production defaults: no upstream allowed until configured, private
/// addresses refused.
pub fn strict_gateway_config(ledger: &Ledger, payment_max: u128) -> GatewayConfig {
    let mut config = GatewayConfig::new(
        ledger.urls.clone(),
        vec![AllowedAsset::base_sepolia_usdc(payment_max)],
        GATEWAY_TOKEN,
    );
    config.limits.ledger_retry_pause = Duration::from_millis(50);
    config
}

pub fn keys() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.add_text(WALLET_KEY).unwrap();
    ring
}

pub async fn gateway(config: GatewayConfig) -> GatewayHandle {
    Gateway::start(config, keys(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("gateway starts")
}

/// The agent: posts a fetch with its session token.
#[derive(Clone)]
pub struct Agent {
    http: reqwest::Client,
    gateway: String,
    pub session_id: String,
    pub token: String,
}

impl Agent {
    pub fn new(gateway: &GatewayHandle, session_id: &str, token: &str) -> Agent {
        Agent {
            http: reqwest::Client::builder().timeout(WAIT * 2).build().unwrap(),
            gateway: gateway.url(),
            session_id: session_id.into(),
            token: token.into(),
        }
    }

    pub fn request(&self, url: &str, key: Option<&str>) -> FetchRequest {
        FetchRequest {
            session_id: self.session_id.clone(),
            url: url.into(),
            idempotency_key: key.map(str::to_string),
            ..FetchRequest::default()
        }
    }

    /// (gateway status, JSON answer)
    pub async fn send(&self, req: &FetchRequest) -> (u16, Value) {
        self.send_as(&self.token, req).await
    }

    pub async fn send_as(&self, token: &str, req: &FetchRequest) -> (u16, Value) {
        self.try_send_as(token, req).await.expect("the gateway answers")
    }

    /// Like [`Agent::send_as`], but a dropped connection is an `Err`.
    pub async fn try_send_as(&self, token: &str, req: &FetchRequest) -> Result<(u16, Value), String> {
        let response = self
            .http
            .post(format!("{}/v1/fetch", self.gateway))
            .bearer_auth(token)
            .json(req)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        Ok((status, value))
    }

    pub async fn fetch(&self, url: &str, key: Option<&str>) -> (u16, Value) {
        self.send(&self.request(url, key)).await
    }
}

pub fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or_else(|| panic!("no code in {v}"))
}
