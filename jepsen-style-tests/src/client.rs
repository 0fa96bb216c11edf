//! HTTP calls to the nodes, and how each answer becomes `ok`, `fail` or
//! `info`.

use std::time::Duration;

use api::{
    AuthorizationView, AuthorizeRequest, BudgetView, CaptureRequest, CaptureResponse, ClusterStatus,
    CreateSessionRequest, CreateSessionResponse, Decision, DigestView, ErrorBody, SessionView, TokenResponse,
    UpdateBudgetRequest, VoidRequest, VoidResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::final_state::{CapFinal, HoldFinal, LevelFinal};
use crate::history::{format_amount, parse_amount, Outcome, Pos, Request, Response};

/// Why a call did not give a `200` answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server answered with an error body.
    #[error("HTTP {status} {code}: {message}")]
    Status { status: u16, code: String, message: String },
    /// The connection never opened: nothing was sent.
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    /// Sent, but the answer was lost or unreadable.
    #[error("{0}")]
    Broken(String),
}

impl CallError {
    /// Whether the operation definitely did not take effect.
    pub fn outcome(&self) -> Outcome {
        match self {
            CallError::Status { status, code, .. } => {
                let definite = match *status {
                    503 => code == api::codes::NO_LEADER || code == api::codes::OVERLOADED,
                    400..=499 => true,
                    _ => false,
                };
                if definite {
                    Outcome::Fail {
                        status: *status,
                        code: code.clone(),
                    }
                } else {
                    Outcome::Info {
                        reason: format!("HTTP {status} {code}"),
                    }
                }
            }
            CallError::Connect(_) => Outcome::Fail {
                status: 0,
                code: "connect".into(),
            },
            CallError::Timeout => Outcome::Info {
                reason: "client timeout".into(),
            },
            CallError::Broken(e) => Outcome::Info { reason: e.clone() },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Status { status: 404, .. })
    }
}

/// One node's HTTP API as published on the host.
#[derive(Clone, Debug)]
pub struct NodeApi {
    pub id: u8,
    pub base: String,
}

/// A client of the cluster: every call names the node it goes to.
#[derive(Clone)]
pub struct Api {
    pub nodes: Vec<NodeApi>,
    http: reqwest::Client,
    admin_token: String,
}

impl Api {
    pub fn new(ports: &[u16], admin_token: &str, timeout: Duration) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_millis(500).min(timeout))
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .no_proxy()
            .build()?;
        Ok(Api {
            nodes: ports
                .iter()
                .enumerate()
                .map(|(i, p)| NodeApi {
                    id: (i + 1) as u8,
                    base: format!("http://127.0.0.1:{p}"),
                })
                .collect(),
            http,
            admin_token: admin_token.to_string(),
        })
    }

    fn url(&self, node: u8, path: &str) -> String {
        let base = self
            .nodes
            .iter()
            .find(|n| n.id == node)
            .map(|n| n.base.as_str())
            .unwrap_or("http://127.0.0.1:9");
        format!("{base}{path}")
    }

    async fn call<T: DeserializeOwned>(
        &self,
        node: u8,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Option<Duration>,
    ) -> Result<T, CallError> {
        self.call_as(node, method, path, body, timeout, &self.admin_token).await
    }

    /// [`Api::call`] with another bearer token (a session's).
    async fn call_as<T: DeserializeOwned>(
        &self,
        node: u8,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Option<Duration>,
        bearer: &str,
    ) -> Result<T, CallError> {
        let mut req = self.http.request(method, self.url(node, path)).bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(classify)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(classify)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Broken(format!("unreadable answer: {e}")));
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => (b.code, b.message),
            Err(_) => (
                format!("http_{}", status.as_u16()),
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            ),
        };
        Err(CallError::Status {
            status: status.as_u16(),
            code,
            message,
        })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        node: u8,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<T, CallError> {
        self.call::<T>(node, reqwest::Method::GET, path, None::<&()>, timeout)
            .await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        node: u8,
        path: &str,
        body: &(impl Serialize + ?Sized),
        timeout: Option<Duration>,
    ) -> Result<T, CallError> {
        self.call(node, reqwest::Method::POST, path, Some(body), timeout).await
    }

    pub async fn status(&self, node: u8, timeout: Duration) -> Result<ClusterStatus, CallError> {
        self.get(node, "/v1/cluster/status", Some(timeout)).await
    }

    pub async fn digest(&self, node: u8, timeout: Duration) -> Result<DigestView, CallError> {
        self.get(node, "/v1/cluster/digest", Some(timeout)).await
    }

    /// Sends one workload request; the answer as the history records it,
    /// and the log time of the entry that decided it.
    pub async fn execute(&self, node: u8, request: &Request) -> (Outcome, Option<u64>) {
        match self.execute_inner(node, request).await {
            Ok((response, time)) => (Outcome::Ok { response }, time),
            Err(e) => (e.outcome(), None),
        }
    }

    async fn execute_inner(&self, node: u8, request: &Request) -> Result<(Response, Option<u64>), CallError> {
        match request {
            Request::Authorize {
                session,
                tool,
                amount,
                key,
                hold_seconds,
                token,
            } => {
                let body = AuthorizeRequest {
                    amount: Some(format_amount(*amount)),
                    amount_atomic: None,
                    tool: tool.clone(),
                    idempotency_key: Some(key.clone()),
                    hold_seconds: Some(*hold_seconds),
                    context: None,
                };
                let path = format!("/v1/sessions/{session}/authorizations");
                let bearer = token.as_deref().unwrap_or(&self.admin_token);
                let d: Decision = self
                    .call_as(node, reqwest::Method::POST, &path, Some(&body), None, bearer)
                    .await?;
                Ok((decision(&d)?, Some(d.position.log_time_ms)))
            }
            Request::Capture {
                authorization,
                amount,
                key,
                ..
            } => {
                let body = CaptureRequest {
                    amount: amount.map(format_amount),
                    idempotency_key: Some(key.clone()),
                    ..CaptureRequest::default()
                };
                let c: CaptureResponse = self
                    .post(
                        node,
                        &format!("/v1/authorizations/{authorization}/capture"),
                        &body,
                        None,
                    )
                    .await?;
                Ok((
                    Response::Captured {
                        authorization_id: c.authorization_id,
                        captured: amount_of(&c.captured)?,
                        released: amount_of(&c.released)?,
                        replayed: c.replayed,
                        pos: Pos::new(c.position.log_index, c.position.batch_position),
                    },
                    Some(c.position.log_time_ms),
                ))
            }
            Request::Void { authorization, key, .. } => {
                let body = VoidRequest {
                    idempotency_key: Some(key.clone()),
                };
                let c: VoidResponse = self
                    .post(node, &format!("/v1/authorizations/{authorization}/void"), &body, None)
                    .await?;
                Ok((
                    Response::Voided {
                        authorization_id: c.authorization_id,
                        released: amount_of(&c.released)?,
                        replayed: c.replayed,
                        pos: Pos::new(c.position.log_index, c.position.batch_position),
                    },
                    Some(c.position.log_time_ms),
                ))
            }
            Request::Read { session } => {
                let s: SessionView = self.get(node, &format!("/v1/sessions/{session}"), None).await?;
                Ok((
                    Response::Read {
                        spent: amount_of(&s.spent)?,
                        held: amount_of(&s.held)?,
                        remaining: amount_of(&s.remaining)?,
                        available: amount_of(&s.available)?,
                        status: s.status,
                        read_index: s.read_index,
                    },
                    None,
                ))
            }
            Request::CreateSession {
                session,
                cap,
                budget,
                expires_in_seconds,
            } => {
                let body = CreateSessionRequest {
                    id: Some(session.clone()),
                    cap: format_amount(*cap),
                    expires_in_seconds: Some(*expires_in_seconds),
                    agent_id: format!("jepsen-{session}"),
                    budget: budget.clone(),
                    ..CreateSessionRequest::default()
                };
                let r: CreateSessionResponse = self.post(node, "/v1/sessions", &body, None).await?;
                Ok((
                    Response::SessionCreated {
                        expires_at_ms: r.session.expires_at_ms,
                        index: r.session.read_index,
                        existed: r.existed,
                        token: r.session_token,
                    },
                    None,
                ))
            }
            Request::Revoke { session } => {
                let r: SessionView = self
                    .post(node, &format!("/v1/sessions/{session}/revoke"), &(), None)
                    .await?;
                Ok((Response::Revoked { index: r.read_index }, None))
            }
            Request::RotateToken { session } => {
                let r: TokenResponse = self
                    .post(node, &format!("/v1/sessions/{session}/token"), &(), None)
                    .await?;
                Ok((Response::TokenRotated { token: r.session_token }, None))
            }
            Request::RaiseBudget { budget, cap, .. } => {
                let body = UpdateBudgetRequest {
                    cap: Some(format_amount(*cap)),
                    ..UpdateBudgetRequest::default()
                };
                let b: BudgetView = self
                    .call(
                        node,
                        reqwest::Method::PATCH,
                        &format!("/v1/budgets/{budget}"),
                        Some(&body),
                        None,
                    )
                    .await?;
                Ok((
                    Response::BudgetUpdated {
                        cap: amount_of(&b.cap)?,
                    },
                    None,
                ))
            }
        }
    }

    pub async fn hold(&self, node: u8, id: &str, timeout: Duration) -> Result<HoldFinal, CallError> {
        let a: AuthorizationView = self
            .get(node, &format!("/v1/authorizations/{id}"), Some(timeout))
            .await?;
        Ok(HoldFinal {
            session: a.session_id,
            tool: a.tool,
            amount: amount_of(&a.amount)?,
            status: a.status,
            captured: amount_of(&a.captured)?,
            key: a.idempotency_key,
            expires_at_ms: a.expires_at_ms,
        })
    }

    pub async fn session_final(&self, node: u8, id: &str, timeout: Duration) -> Result<LevelFinal, CallError> {
        let s: SessionView = self.get(node, &format!("/v1/sessions/{id}"), Some(timeout)).await?;
        level(&s.cap, &s.spent, &s.held, &s.remaining, &s.tool_caps)
    }

    pub async fn budget_final(&self, node: u8, id: &str, timeout: Duration) -> Result<LevelFinal, CallError> {
        let b: BudgetView = self.get(node, &format!("/v1/budgets/{id}"), Some(timeout)).await?;
        level(&b.cap, &b.spent, &b.held, &b.remaining, &b.tool_caps)
    }
}

fn level(
    cap: &str,
    spent: &str,
    held: &str,
    remaining: &str,
    tools: &std::collections::BTreeMap<String, api::CapView>,
) -> Result<LevelFinal, CallError> {
    let mut tool_caps = std::collections::BTreeMap::new();
    for (t, c) in tools {
        tool_caps.insert(
            t.clone(),
            CapFinal {
                cap: amount_of(&c.cap)?,
                spent: amount_of(&c.spent)?,
                held: amount_of(&c.held)?,
            },
        );
    }
    Ok(LevelFinal {
        limit: CapFinal {
            cap: amount_of(cap)?,
            spent: amount_of(spent)?,
            held: amount_of(held)?,
        },
        remaining: amount_of(remaining)?,
        tool_caps,
    })
}

fn classify(e: reqwest::Error) -> CallError {
    if e.is_timeout() {
        CallError::Timeout
    } else if e.is_connect() {
        CallError::Connect(e.to_string())
    } else {
        CallError::Broken(format!("{e}"))
    }
}

fn amount_of(text: &str) -> Result<u64, CallError> {
    parse_amount(text).ok_or_else(|| CallError::Broken(format!("unreadable amount {text:?}")))
}

fn opt_amount(text: &Option<String>) -> Result<Option<u64>, CallError> {
    text.as_deref().map(amount_of).transpose()
}

fn decision(d: &Decision) -> Result<Response, CallError> {
    let approved = match d.decision.as_str() {
        "approved" => true,
        "denied" => false,
        other => return Err(CallError::Broken(format!("decision {other:?}"))),
    };
    Ok(Response::Decision {
        approved,
        reason: d.reason.clone(),
        budget_id: d.budget_id.clone(),
        authorization_id: d.authorization_id.clone(),
        amount: opt_amount(&d.amount)?,
        remaining: opt_amount(&d.remaining)?,
        expires_at_ms: d.expires_at_ms,
        replayed: d.replayed,
        pos: Pos::new(d.position.log_index, d.position.batch_position),
    })
}
