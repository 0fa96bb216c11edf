//! A typed client for spendcap's HTTP API (`/v1`).
//!
//! Errors keep the distinction that matters with money: [`ClientError::is_unknown`]
//! is true when the request may have taken effect (a timeout after sending,
//! or the node's `504 outcome_unknown`): retry with the same idempotency key,
//! never treat it as a failure.

use std::time::Duration;

use api::*;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long a request may take, unless set otherwise.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error body.
    #[error("{status}: {code}: {message}")]
    Api { status: u16, code: String, message: String },
    /// The request may or may not have taken effect.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The request never reached a node.
    #[error("could not reach the node: {0}")]
    Unreachable(String),
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl ClientError {
    /// True when the request may have been applied.
    pub fn is_unknown(&self) -> bool {
        match self {
            ClientError::Unknown(_) => true,
            ClientError::Api { code, .. } => code == codes::OUTCOME_UNKNOWN,
            _ => false,
        }
    }

    /// The API error code, if the node answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How many times [`Client::create_session`] repeats a create whose outcome
/// is unknown.
pub const CREATE_RETRIES_MAX: u32 = 3;

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut buf);
    hex::encode(buf)
}

/// A new session token: [`SESSION_TOKEN_PREFIX`] and 256 random bits in hex.
pub fn new_session_token() -> String {
    format!("{SESSION_TOKEN_PREFIX}{}", random_hex(32))
}

/// Fills in what makes a create retry-safe: a session id (`ses_` and 96
/// random bits in hex) and a session token ([`new_session_token`]) when the
/// request has none. Send the returned request on every retry.
pub fn prepare_session(mut req: CreateSessionRequest) -> CreateSessionRequest {
    if req.id.is_none() {
        req.id = Some(format!("ses_{}", random_hex(12)));
    }
    if req.token.is_none() {
        req.token = Some(new_session_token());
    }
    req
}

/// A client for one node (any node: followers forward writes).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

fn encode(part: &str) -> String {
    part.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    /// `base` is like `http://127.0.0.1:7700`.
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        Self::with_timeout(base, token, REQUEST_TIMEOUT_DEFAULT)
    }

    pub fn with_timeout(base: &str, token: Option<String>, timeout: Duration) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same node, acting with another token.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let text = self.send_raw(method, path, body).await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Decode(format!("{e}: {text}")))
    }

    async fn send_raw<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<String, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_builder() {
                ClientError::Unreachable(e.to_string())
            } else {
                ClientError::Unknown(e.to_string())
            }
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ClientError::Unknown(e.to_string()))?;
        if status.is_success() {
            return Ok(text);
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => Err(ClientError::Api {
                status: status.as_u16(),
                code: e.code,
                message: e.message,
            }),
            Err(_) if status == StatusCode::GATEWAY_TIMEOUT => Err(ClientError::Unknown(text)),
            Err(_) => Err(ClientError::Api {
                status: status.as_u16(),
                code: "unexpected".into(),
                message: text,
            }),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send::<(), T>(Method::GET, path, None).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn healthz(&self) -> Result<Health, ClientError> {
        self.get("/healthz").await
    }

    pub async fn readyz(&self) -> Result<Health, ClientError> {
        self.get("/readyz").await
    }

    pub async fn create_budget(&self, req: &CreateBudgetRequest) -> Result<BudgetView, ClientError> {
        self.post("/v1/budgets", req).await
    }

    pub async fn update_budget(&self, id: &str, req: &UpdateBudgetRequest) -> Result<BudgetView, ClientError> {
        self.send(Method::PATCH, &format!("/v1/budgets/{}", encode(id)), Some(req))
            .await
    }

    pub async fn get_budget(&self, id: &str) -> Result<BudgetView, ClientError> {
        self.get(&format!("/v1/budgets/{}", encode(id))).await
    }

    pub async fn list_budgets(&self, after: Option<&str>, limit: Option<u32>) -> Result<Page<BudgetView>, ClientError> {
        self.get(&format!("/v1/budgets{}", list_query(after, limit))).await
    }

    /// Creates a session, retry-safe: the id and the token are chosen here
    /// when the request names none (see [`prepare_session`]), so a retry
    /// after an unknown outcome is an exact replay that answers with the
    /// same, working token. Retries at most [`CREATE_RETRIES_MAX`] times,
    /// only while the outcome is unknown.
    pub async fn create_session(&self, req: &CreateSessionRequest) -> Result<CreateSessionResponse, ClientError> {
        let req = prepare_session(req.clone());
        let mut attempt = 0;
        loop {
            match self.post("/v1/sessions", &req).await {
                Err(e) if e.is_unknown() && attempt < CREATE_RETRIES_MAX => attempt += 1,
                other => return other,
            }
        }
    }

    /// The session the client's session token belongs to.
    pub async fn whoami(&self) -> Result<SessionView, ClientError> {
        self.get("/v1/session").await
    }

    pub async fn get_session(&self, id: &str) -> Result<SessionView, ClientError> {
        self.get(&format!("/v1/sessions/{}", encode(id))).await
    }

    pub async fn list_sessions(
        &self,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<SessionView>, ClientError> {
        self.get(&format!("/v1/sessions{}", list_query(after, limit))).await
    }

    pub async fn revoke_session(&self, id: &str) -> Result<SessionView, ClientError> {
        self.post(&format!("/v1/sessions/{}/revoke", encode(id)), &serde_json::json!({}))
            .await
    }

    pub async fn rotate_token(&self, id: &str) -> Result<TokenResponse, ClientError> {
        self.post(&format!("/v1/sessions/{}/token", encode(id)), &serde_json::json!({}))
            .await
    }

    pub async fn authorize(&self, session_id: &str, req: &AuthorizeRequest) -> Result<Decision, ClientError> {
        self.post(&format!("/v1/sessions/{}/authorizations", encode(session_id)), req)
            .await
    }

    pub async fn batch_authorize(&self, req: &BatchAuthorizeRequest) -> Result<BatchAuthorizeResponse, ClientError> {
        self.post("/v1/batch/authorize", req).await
    }

    pub async fn capture(&self, authorization_id: &str, req: &CaptureRequest) -> Result<CaptureResponse, ClientError> {
        self.post(&format!("/v1/authorizations/{}/capture", encode(authorization_id)), req)
            .await
    }

    pub async fn void(&self, authorization_id: &str, req: &VoidRequest) -> Result<VoidResponse, ClientError> {
        self.post(&format!("/v1/authorizations/{}/void", encode(authorization_id)), req)
            .await
    }

    /// Pins a hold while a payment against it may be in flight.
    pub async fn mark_settling(
        &self,
        authorization_id: &str,
        reference: &str,
    ) -> Result<MarkSettlingResponse, ClientError> {
        let body = MarkSettlingRequest {
            reference: reference.to_string(),
        };
        self.post(
            &format!("/v1/authorizations/{}/settling", encode(authorization_id)),
            &body,
        )
        .await
    }

    /// Holds with a payment possibly in flight (admin).
    pub async fn settling_authorizations(&self, limit: Option<u32>) -> Result<Page<AuthorizationView>, ClientError> {
        let limit = limit.map(|l| format!("&limit={l}")).unwrap_or_default();
        self.get(&format!("/v1/authorizations?status=settling{limit}")).await
    }

    pub async fn get_authorization(&self, id: &str) -> Result<AuthorizationView, ClientError> {
        self.get(&format!("/v1/authorizations/{}", encode(id))).await
    }

    pub async fn receipts(&self, q: &ReceiptQuery) -> Result<Page<ReceiptView>, ClientError> {
        self.get(&format!("/v1/receipts{}", receipt_query(q))).await
    }

    pub async fn get_receipt(&self, id: &str) -> Result<ReceiptView, ClientError> {
        self.get(&format!("/v1/receipts/{}", encode(id))).await
    }

    /// Every matching receipt, one JSON object per line.
    pub async fn export_receipts(&self, q: &ReceiptQuery) -> Result<String, ClientError> {
        self.send_raw::<()>(Method::GET, &format!("/v1/receipts/export{}", receipt_query(q)), None)
            .await
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.get("/v1/cluster/status").await
    }

    pub async fn cluster_digest(&self) -> Result<DigestView, ClientError> {
        self.get("/v1/cluster/digest").await
    }

    pub async fn add_learner(&self, req: &AddLearnerRequest) -> Result<MembershipResponse, ClientError> {
        self.post("/v1/cluster/learners", req).await
    }

    pub async fn change_membership(&self, req: &ChangeMembershipRequest) -> Result<MembershipResponse, ClientError> {
        self.post("/v1/cluster/membership", req).await
    }

    pub async fn trigger_snapshot(&self) -> Result<(), ClientError> {
        self.send_raw(Method::POST, "/v1/cluster/snapshot", Some(&serde_json::json!({})))
            .await
            .map(|_| ())
    }

    /// Downloads a backup of the node's state into `out`, calling
    /// `progress(bytes_so_far, total)` as chunks arrive. Returns the size.
    pub async fn backup_to(
        &self,
        out: &mut impl std::io::Write,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<u64, ClientError> {
        let mut request = self.http.get(format!("{}/v1/cluster/backup", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let e: ErrorBody = serde_json::from_str(&text).unwrap_or(ErrorBody {
                code: "unexpected".into(),
                message: text,
            });
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: e.code,
                message: e.message,
            });
        }
        let total = response.content_length();
        let mut written = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ClientError::Unknown(e.to_string()))?
        {
            out.write_all(&chunk)
                .map_err(|e| ClientError::Decode(format!("writing the backup: {e}")))?;
            written += chunk.len() as u64;
            progress(written, total);
        }
        if total.is_some_and(|t| t != written) {
            return Err(ClientError::Decode(format!(
                "backup truncated: {written} of {total:?} bytes"
            )));
        }
        Ok(written)
    }

    /// Any GET, raw (for the CLI and tests).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        self.send_raw::<()>(Method::GET, path, None).await
    }
}

fn list_query(after: Option<&str>, limit: Option<u32>) -> String {
    let mut parts = Vec::new();
    if let Some(a) = after {
        parts.push(format!("after={}", encode(a)));
    }
    if let Some(l) = limit {
        parts.push(format!("limit={l}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn receipt_query(q: &ReceiptQuery) -> String {
    let mut parts = Vec::new();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{k}={}", encode(&v)));
        }
    };
    add("session_id", q.session_id.clone());
    add("agent_id", q.agent_id.clone());
    add("tool", q.tool.clone());
    add("from_ms", q.from_ms.map(|v| v.to_string()));
    add("to_ms", q.to_ms.map(|v| v.to_string()));
    add("after", q.after.clone());
    add("limit", q.limit.map(|v| v.to_string()));
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
