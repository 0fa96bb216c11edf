//! etcd: a three-member cluster (Raft, WAL fsynced), one key per account
//! holding `"cap:spent"`, driven through etcd's v3 JSON gateway over HTTP
//! (`/v3/kv/range`, `/v3/kv/txn`; keys and values base64). Authorizing is
//! optimistic concurrency: a linearizable read, then a transaction that
//! writes the new spent only if the key's `mod_revision` is still the one
//! read; when another writer got there first the transaction's failure
//! branch returns the key's current value and the check is redone, up to
//! `attempts_max` times. A denial needs no write: spent only grows, so a
//! linearizable read that already exceeds the cap is a valid answer.
//!
//! The gateway was chosen over a gRPC client because the maintained Rust
//! client (`etcd-client`) compiles etcd's `.proto` files with `protoc` in
//! its build script, and the harness builds without `protoc`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};

use super::driver::{free_ports, http_client, wait_until, BatchItem, Driver, Outcome};
use crate::error::{BenchError, Result};
use crate::procs::ServerProcess;
use crate::tracker::StoredAccount;
use crate::workload::AccountSet;

/// Members of the cluster.
pub const MEMBERS: usize = 3;
/// Seconds the cluster gets to report healthy.
const READY_SECONDS_MAX: u64 = 60;
/// Operations one transaction may hold (etcd's default is 128).
const TXN_OPS_MAX: usize = 2048;
/// Puts per transaction when creating accounts.
const CREATE_PUTS_PER_TXN: usize = 1000;
/// Keys per page when reading a set back.
const READ_PAGE_KEYS: i64 = 1000;
/// Pages read at most per set (bounds the loop).
const READ_PAGES_MAX: usize = 10_000;
const KEY_PREFIX: &str = "bench/";

/// A running three-member cluster.
pub struct EtcdCluster {
    pub members: Vec<ServerProcess>,
    pub client_urls: Vec<String>,
}

impl EtcdCluster {
    pub async fn start(binary: &Path, root: &Path, log_dir: &Path) -> Result<Self> {
        let ports = free_ports(2 * MEMBERS)?;
        let client_urls: Vec<String> = (0..MEMBERS).map(|i| format!("http://127.0.0.1:{}", ports[i])).collect();
        let peer_urls: Vec<String> = (0..MEMBERS)
            .map(|i| format!("http://127.0.0.1:{}", ports[MEMBERS + i]))
            .collect();
        let initial_cluster = (0..MEMBERS)
            .map(|i| format!("m{}={}", i + 1, peer_urls[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(MEMBERS);
        for i in 0..MEMBERS {
            let name = format!("m{}", i + 1);
            let mut command = Command::new(binary);
            command
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(root.join(&name))
                .args(["--listen-client-urls", client_urls[i].as_str()])
                .args(["--advertise-client-urls", client_urls[i].as_str()])
                .args(["--listen-peer-urls", peer_urls[i].as_str()])
                .args(["--initial-advertise-peer-urls", peer_urls[i].as_str()])
                .args(["--initial-cluster", initial_cluster.as_str()])
                .args(["--initial-cluster-token", "spendcap-bench"])
                .args(["--initial-cluster-state", "new"])
                .arg("--max-txn-ops")
                .arg(TXN_OPS_MAX.to_string())
                .args(["--quota-backend-bytes", "8589934592"])
                .args(["--auto-compaction-mode", "revision"])
                .args(["--auto-compaction-retention", "100000"])
                .args(["--logger", "zap", "--log-level", "warn", "--log-outputs", "stderr"]);
            members.push(ServerProcess::start(format!("etcd-{name}"), command, log_dir)?);
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let urls = client_urls.clone();
        let ready = wait_until("etcd", READY_SECONDS_MAX, Duration::from_millis(200), || {
            let http = http.clone();
            let urls = urls.clone();
            async move {
                for url in &urls {
                    let body: serde_json::Value = http
                        .get(format!("{url}/health"))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?
                        .json()
                        .await
                        .map_err(|e| e.to_string())?;
                    if body["health"] != "true" {
                        return Err(format!("{url}: {body}"));
                    }
                }
                Ok(())
            }
        })
        .await;
        for member in &mut members {
            member.check_running()?;
        }
        ready?;
        Ok(Self { members, client_urls })
    }

    pub fn roots(&self) -> Vec<(String, u32)> {
        self.members.iter().map(|m| (m.label.clone(), m.pid())).collect()
    }
}

/// etcd's JSON encodes 64-bit integers as strings.
fn int64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Text(String),
        Number(i64),
    }
    match Int64::deserialize(d)? {
        Int64::Number(n) => Ok(n),
        Int64::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Serialize)]
struct RangeRequest {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    range_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<KeyValue>,
    #[serde(default)]
    more: bool,
}

#[derive(Debug, Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
}

#[derive(Debug, Serialize)]
struct PutRequest {
    key: String,
    value: String,
}

#[derive(Debug, Default, Serialize)]
struct RequestOp {
    #[serde(skip_serializing_if = "Option::is_none")]
    request_range: Option<RangeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_put: Option<PutRequest>,
}

impl RequestOp {
    fn range(key: &str) -> Self {
        Self {
            request_range: Some(RangeRequest {
                key: key.to_string(),
                range_end: None,
                limit: None,
            }),
            ..Self::default()
        }
    }

    fn put(key: &str, value: &str) -> Self {
        Self {
            request_put: Some(PutRequest {
                key: key.to_string(),
                value: value.to_string(),
            }),
            ..Self::default()
        }
    }
}

#[derive(Debug, Serialize)]
struct Compare {
    key: String,
    target: &'static str,
    result: &'static str,
    mod_revision: String,
}

#[derive(Debug, Default, Serialize)]
struct TxnRequest {
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
    failure: Vec<RequestOp>,
}

#[derive(Debug, Deserialize)]
struct TxnResponse {
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<ResponseOp>,
}

#[derive(Debug, Deserialize)]
struct ResponseOp {
    #[serde(default)]
    response_range: Option<RangeResponse>,
}

/// One account as stored: `"cap:spent"` at a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Account {
    cap: u64,
    spent: u64,
    mod_revision: i64,
}

fn encode_key(text: &str) -> String {
    BASE64.encode(text)
}

fn encode_value(cap: u64, spent: u64) -> String {
    BASE64.encode(format!("{cap}:{spent}"))
}

fn decode_account(kv: &KeyValue) -> Option<Account> {
    let raw = BASE64.decode(&kv.value).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    let (cap, spent) = text.split_once(':')?;
    Some(Account {
        cap: cap.parse().ok()?,
        spent: spent.parse().ok()?,
        mod_revision: kv.mod_revision,
    })
}

/// The first key of a range's only response, if any.
fn first_account(range: Option<&RangeResponse>) -> Option<Account> {
    range?.kvs.first().and_then(decode_account)
}

/// The smallest key after every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn http_failure(e: &reqwest::Error, maybe_applied: bool) -> Outcome {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection"
    } else if e.is_status() {
        "http_status"
    } else {
        "http"
    };
    // A refused connection sent nothing.
    Outcome::failed(kind, maybe_applied && !e.is_connect())
}

/// Requests go round-robin over the members; followers forward writes to
/// the leader.
pub struct EtcdDriver {
    http: reqwest::Client,
    endpoints: Vec<String>,
    next: AtomicUsize,
    attempts_max: u32,
}

impl EtcdDriver {
    pub fn connect(
        endpoints: Vec<String>,
        parallelism: usize,
        request_timeout: Duration,
        attempts_max: u32,
    ) -> Result<Self> {
        let http = http_client(parallelism, request_timeout)?;
        Ok(Self {
            http,
            endpoints,
            next: AtomicUsize::new(0),
            attempts_max: attempts_max.max(1),
        })
    }

    fn endpoint(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }

    async fn post<B: Serialize, T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &str,
        path: &str,
        body: &B,
    ) -> std::result::Result<T, reqwest::Error> {
        self.http
            .post(format!("{endpoint}{path}"))
            .json(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    async fn txn(&self, endpoint: &str, txn: &TxnRequest) -> std::result::Result<TxnResponse, reqwest::Error> {
        self.post(endpoint, "/v3/kv/txn", txn).await
    }

    fn key(set: &AccountSet, index: usize) -> String {
        encode_key(&format!("{KEY_PREFIX}{}", set.key(index)))
    }
}

impl Driver for EtcdDriver {
    async fn create_accounts(&self, set: &AccountSet) -> Result<()> {
        let value = encode_value(set.cap_atomic, 0);
        let indexes: Vec<usize> = (0..set.count).collect();
        for chunk in indexes.chunks(CREATE_PUTS_PER_TXN) {
            let txn = TxnRequest {
                success: chunk
                    .iter()
                    .map(|&i| RequestOp::put(&Self::key(set, i), &value))
                    .collect(),
                ..TxnRequest::default()
            };
            let response = self.txn(self.endpoint(), &txn).await?;
            if !response.succeeded {
                return Err(BenchError::protocol("etcd", "an unconditional txn failed"));
            }
        }
        Ok(())
    }

    async fn authorize(&self, _worker: usize, set: &AccountSet, account: usize, amount_atomic: u64) -> Outcome {
        let endpoint = self.endpoint();
        let key = Self::key(set, account);
        let read = RangeRequest {
            key: key.clone(),
            range_end: None,
            limit: None,
        };
        let mut current = match self.post::<_, RangeResponse>(endpoint, "/v3/kv/range", &read).await {
            Ok(range) => match first_account(Some(&range)) {
                Some(a) => a,
                None => return Outcome::failed("unknown_account", false),
            },
            Err(e) => return http_failure(&e, false),
        };
        for _ in 0..self.attempts_max {
            let Some(new_spent) = current.spent.checked_add(amount_atomic) else {
                return Outcome::Denied;
            };
            if new_spent > current.cap {
                return Outcome::Denied;
            }
            let txn = TxnRequest {
                compare: vec![Compare {
                    key: key.clone(),
                    target: "MOD",
                    result: "EQUAL",
                    mod_revision: current.mod_revision.to_string(),
                }],
                success: vec![RequestOp::put(&key, &encode_value(current.cap, new_spent))],
                failure: vec![RequestOp::range(&key)],
            };
            match self.txn(endpoint, &txn).await {
                Err(e) => return http_failure(&e, true),
                Ok(response) if response.succeeded => return Outcome::Approved,
                Ok(response) => {
                    let range = response.responses.first().and_then(|r| r.response_range.as_ref());
                    match first_account(range) {
                        Some(a) => current = a,
                        None => return Outcome::failed("protocol", false),
                    }
                }
            }
        }
        Outcome::failed("conflict_retries", false)
    }

    async fn authorize_batch(&self, _worker: usize, set: &AccountSet, items: &[BatchItem]) -> Vec<Outcome> {
        let endpoint = self.endpoint();
        let all = |o: Outcome| vec![o; items.len()];
        let mut accounts: Vec<usize> = items.iter().map(|i| i.account).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let keys: Vec<String> = accounts.iter().map(|&a| Self::key(set, a)).collect();
        let ranges = || keys.iter().map(|k| RequestOp::range(k)).collect::<Vec<_>>();
        // A transaction of reads only is served as a linearizable read.
        let read = TxnRequest {
            success: ranges(),
            ..TxnRequest::default()
        };
        let mut responses = match self.txn(endpoint, &read).await {
            Ok(r) => r.responses,
            Err(e) => return all(http_failure(&e, false)),
        };
        for _ in 0..self.attempts_max {
            let mut state: BTreeMap<usize, Account> = BTreeMap::new();
            for (&account, response) in accounts.iter().zip(&responses) {
                if let Some(a) = first_account(response.response_range.as_ref()) {
                    state.insert(account, a);
                }
            }
            if state.len() != accounts.len() {
                return all(Outcome::failed("unknown_account", false));
            }
            let mut changed = vec![false; accounts.len()];
            let outcomes: Vec<Outcome> = items
                .iter()
                .map(|item| {
                    let Ok(slot) = accounts.binary_search(&item.account) else {
                        return Outcome::failed("protocol", false);
                    };
                    let Some(a) = state.get_mut(&item.account) else {
                        return Outcome::failed("protocol", false);
                    };
                    match a.spent.checked_add(item.amount_atomic) {
                        Some(new_spent) if new_spent <= a.cap => {
                            a.spent = new_spent;
                            changed[slot] = true;
                            Outcome::Approved
                        }
                        _ => Outcome::Denied,
                    }
                })
                .collect();
            if !changed.contains(&true) {
                return outcomes;
            }
            let txn = TxnRequest {
                compare: accounts
                    .iter()
                    .zip(&keys)
                    .map(|(account, key)| Compare {
                        key: key.clone(),
                        target: "MOD",
                        result: "EQUAL",
                        mod_revision: state[account].mod_revision.to_string(),
                    })
                    .collect(),
                success: accounts
                    .iter()
                    .zip(&keys)
                    .zip(&changed)
                    .filter(|(_, &c)| c)
                    .map(|((account, key), _)| {
                        let a = state[account];
                        RequestOp::put(key, &encode_value(a.cap, a.spent))
                    })
                    .collect(),
                failure: ranges(),
            };
            match self.txn(endpoint, &txn).await {
                Err(e) => return all(http_failure(&e, true)),
                Ok(response) if response.succeeded => return outcomes,
                Ok(response) => responses = response.responses,
            }
        }
        all(Outcome::failed("conflict_retries", false))
    }

    async fn read_accounts(&self, set: &AccountSet) -> Result<Vec<Option<StoredAccount>>> {
        let prefix = format!("{KEY_PREFIX}{}-", set.name);
        let range_end = BASE64.encode(prefix_end(&prefix));
        let mut next_key = encode_key(&prefix);
        let mut out = vec![None; set.count];
        for _ in 0..READ_PAGES_MAX {
            let page: RangeResponse = self
                .post(
                    self.endpoint(),
                    "/v3/kv/range",
                    &RangeRequest {
                        key: next_key.clone(),
                        range_end: Some(range_end.clone()),
                        limit: Some(READ_PAGE_KEYS),
                    },
                )
                .await?;
            for kv in &page.kvs {
                let raw = BASE64
                    .decode(&kv.key)
                    .map_err(|e| BenchError::protocol("etcd", e.to_string()))?;
                let text = String::from_utf8_lossy(&raw);
                let index = text.strip_prefix(KEY_PREFIX).and_then(|k| set.index_of(k));
                if let (Some(index), Some(a)) = (index, decode_account(kv)) {
                    out[index] = Some(StoredAccount {
                        cap_atomic: a.cap,
                        used_atomic: a.spent,
                    });
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => {
                    let mut raw = BASE64
                        .decode(&last.key)
                        .map_err(|e| BenchError::protocol("etcd", e.to_string()))?;
                    raw.push(0);
                    next_key = BASE64.encode(raw);
                }
                _ => return Ok(out),
            }
        }
        Err(BenchError::protocol("etcd", "reading accounts did not finish"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_gateway_json() {
        let body = r#"{"header":{"revision":"3"},"responses":[{"response_range":{"header":{"revision":"2"},
            "kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"2","version":"1","value":"MTAwOjA="}],"count":"1"}}]}"#;
        let r: TxnResponse = serde_json::from_str(body).unwrap();
        assert!(!r.succeeded);
        let a = first_account(r.responses[0].response_range.as_ref()).unwrap();
        assert_eq!(
            a,
            Account {
                cap: 100,
                spent: 0,
                mod_revision: 2
            }
        );
        let ok: TxnResponse = serde_json::from_str(r#"{"succeeded":true,"responses":[{"response_put":{}}]}"#).unwrap();
        assert!(ok.succeeded);
        let empty: RangeResponse = serde_json::from_str(r#"{"header":{}}"#).unwrap();
        assert!(empty.kvs.is_empty() && !empty.more);
    }

    #[test]
    fn encodes_a_compare_and_swap() {
        let txn = TxnRequest {
            compare: vec![Compare {
                key: encode_key("a"),
                target: "MOD",
                result: "EQUAL",
                mod_revision: "7".into(),
            }],
            success: vec![RequestOp::put(&encode_key("a"), &encode_value(100, 10))],
            failure: vec![RequestOp::range(&encode_key("a"))],
        };
        let json = serde_json::to_value(&txn).unwrap();
        assert_eq!(json["compare"][0]["mod_revision"], "7");
        assert_eq!(json["success"][0]["request_put"]["value"], BASE64.encode("100:10"));
        assert!(json["failure"][0]["request_range"].get("range_end").is_none());
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("bench/a-"), b"bench/a.".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
