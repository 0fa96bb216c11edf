//! A real cluster for tests: `spendcap serve` processes on 127.0.0.1 with
//! RocksDB in temp dirs, talked to over real HTTP.

#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::{AuthorizeRequest, CreateBudgetRequest};
use client::Client;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The shared secret of Raft RPCs (mandatory for nodes with peers).
pub const PEER_TOKEN: &str = "test-peer-token-0123456789";
/// The x402 gateway's credential.
pub const GATEWAY_TOKEN: &str = "test-gateway-token-0123456789";

/// An authorization of `amount` for the `search` tool under idempotency key
/// `key`, held for an hour.
pub fn authorize_request(amount: &str, key: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        amount: Some(amount.into()),
        tool: "search".into(),
        idempotency_key: Some(key.into()),
        hold_seconds: Some(3600),
        ..Default::default()
    }
}

/// Creates budget `id` with `cap` and nothing else set; panics if refused.
pub async fn budget(admin: &Client, id: &str, cap: &str) {
    admin
        .create_budget(&CreateBudgetRequest {
            id: id.into(),
            cap: cap.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create budget {id}: {e}"));
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

pub struct NodeProc {
    pub id: u64,
    pub api_port: u16,
    pub raft_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    members: String,
    extra: Vec<String>,
    pub rust_log: String,
    /// Passed as `--peer-token` (the default) or not at all (`None`).
    pub peer_token: Option<String>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes forming one cluster and waits until all are ready.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(n, extra);
        cluster.start_all().await;
        cluster
    }

    /// Starts every node and waits until all are ready.
    pub async fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.spawn(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i).await;
        }
    }

    /// The `--initial-members` value of this cluster.
    pub fn members(&self) -> &str {
        &self.members
    }

    /// Adds a node that joins (does not initialize) and starts it; returns
    /// its index. Add it to the cluster through the API.
    pub fn add_joining_node(&mut self) -> usize {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        self.nodes.push(NodeProc {
            id,
            api_port: free_port(),
            raft_port: free_port(),
            data_dir: self.dir.path().join(format!("node{id}")),
            log: self.dir.path().join(format!("node{id}.log")),
            child: None,
        });
        let i = self.nodes.len() - 1;
        self.spawn_with(i, &["--join"]);
        i
    }

    /// Allocates ports and directories for `n` nodes without starting them.
    pub fn prepare(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            nodes.push(NodeProc {
                id,
                api_port: free_port(),
                raft_port: free_port(),
                data_dir: dir.path().join(format!("node{id}")),
                log: dir.path().join(format!("node{id}.log")),
                child: None,
            });
        }
        let members = nodes
            .iter()
            .map(|n| format!("{}=127.0.0.1:{}/127.0.0.1:{}", n.id, n.raft_port, n.api_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            nodes,
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            rust_log: "info,openraft=warn".into(),
            peer_token: Some(PEER_TOKEN.into()),
            dir,
        }
    }

    /// Starts node `i` (again).
    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &[]);
    }

    fn spawn_with(&mut self, i: usize, more: &[&str]) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} already running", node.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_spendcap"));
        command
            .arg("serve")
            .args(["--id", &node.id.to_string()])
            .args(["--data-dir", &node.data_dir.display().to_string()])
            .args(["--api-listen", &format!("127.0.0.1:{}", node.api_port)])
            .args(["--raft-listen", &format!("127.0.0.1:{}", node.raft_port)])
            .args(["--initial-members", &self.members])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(["--gateway-token", GATEWAY_TOKEN])
            .args(&self.extra)
            .args(more);
        match &self.peer_token {
            Some(peer) => command.args(["--peer-token", peer]),
            None => command.env_remove("SPENDCAP_PEER_TOKEN"),
        };
        let child = command
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn spendcap serve");
        node.child = Some(child);
    }

    /// Waits (bounded) for node `i` to exit on its own; its exit status, or
    /// `None` if it still runs after `timeout`.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.nodes[i].child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i].child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self, i: usize) -> Client {
        Client::with_timeout(&self.nodes[i].api(), Some(ADMIN_TOKEN.into()), Duration::from_secs(10)).expect("client")
    }

    pub async fn wait_ready(&self, i: usize) {
        let c = self.client(i);
        eventually(
            &format!("node {} ready", self.nodes[i].id),
            Duration::from_secs(60),
            || {
                let c = c.clone();
                async move { c.readyz().await.ok() }
            },
        )
        .await;
    }

    /// The index of the node that is leader, as the running nodes agree.
    pub async fn leader(&self) -> usize {
        eventually("a leader", Duration::from_secs(60), || async {
            for (i, n) in self.nodes.iter().enumerate() {
                if !n.is_running() {
                    continue;
                }
                if let Ok(s) = self.client(i).cluster_status().await {
                    if s.role == "leader" {
                        return Some(i);
                    }
                }
            }
            None
        })
        .await
    }

    /// Waits until every running node has applied the same index with the
    /// same state digest; returns the digest.
    pub async fn converged(&self) -> String {
        eventually("digests to agree", Duration::from_secs(60), || async {
            let mut seen = Vec::new();
            for (i, n) in self.nodes.iter().enumerate() {
                if !n.is_running() {
                    continue;
                }
                seen.push(self.client(i).cluster_digest().await.ok()?);
            }
            let first = seen.first()?.clone();
            seen.iter()
                .all(|d| d.applied_index == first.applied_index && d.digest == first.digest)
                .then_some(first.digest)
        })
        .await
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                let text = self.log_text(i);
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("---- node {} log (last 40 lines) ----", self.nodes[i].id);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}
