//! Calls to the ledger with the retry discipline money needs: "nothing was
//! applied" (`no_leader`, `overloaded`, unreachable) and "unknown"
//! (`outcome_unknown`, a timeout) are retried with the same idempotency key
//! or reference, a bounded number of times; any other answer is final.

use std::future::Future;
use std::time::Duration;

use client::{Client, ClientError};

use crate::limits::{ConfigError, Limits};

/// Why a ledger call gave up.
#[derive(Debug)]
pub enum LedgerFailure {
    /// Every try was refused before anything was applied.
    Unavailable(String),
    /// At least one try may have been applied.
    Unknown(String),
    /// The ledger answered with a final error.
    Refused(ClientError),
}

impl LedgerFailure {
    pub fn code(&self) -> Option<&str> {
        match self {
            LedgerFailure::Refused(e) => e.code(),
            _ => None,
        }
    }
}

impl std::fmt::Display for LedgerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerFailure::Unavailable(m) => write!(f, "ledger unavailable: {m}"),
            LedgerFailure::Unknown(m) => write!(f, "ledger outcome unknown: {m}"),
            LedgerFailure::Refused(e) => write!(f, "ledger refused: {e}"),
        }
    }
}

/// Clients for every configured node (no token until [`Ledger::with_token`]).
#[derive(Clone)]
pub struct Ledger {
    clients: Vec<Client>,
    attempts_max: u32,
    retry_pause: Duration,
}

impl Ledger {
    pub fn new(urls: &[String], limits: &Limits) -> Result<Ledger, ConfigError> {
        let clients = urls
            .iter()
            .map(|u| Client::with_timeout(u, None, limits.ledger_timeout))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new(format!("ledger client: {e}")))?;
        if clients.is_empty() {
            return Err(ConfigError::new("no ledger URL"));
        }
        Ok(Ledger {
            clients,
            attempts_max: limits.ledger_attempts_max,
            retry_pause: limits.ledger_retry_pause,
        })
    }

    /// The same nodes, acting with `token` (a session's token, to
    /// authenticate the agent and authorize; or the gateway's own token, to
    /// pin, capture, void and read holds).
    pub fn with_token(&self, token: &str) -> Ledger {
        Ledger {
            clients: self.clients.iter().map(|c| c.with_token(token)).collect(),
            ..self.clone()
        }
    }

    /// Runs `call` until it gets a final answer or runs out of tries. The
    /// call must be idempotent (carry an idempotency key or reference, or
    /// be a read).
    pub async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, LedgerFailure>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut node = 0usize;
        let mut pause = self.retry_pause;
        let mut maybe_applied = false;
        let mut last = String::new();
        for attempt in 1..=self.attempts_max {
            let client = self.clients[node % self.clients.len()].clone();
            match call(client).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_unknown() => {
                    maybe_applied = true;
                    last = e.to_string();
                }
                Err(e @ ClientError::Unreachable(_)) => {
                    // Never reached that node: try the next one.
                    node += 1;
                    last = e.to_string();
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Some(api::codes::NO_LEADER) | Some(api::codes::OVERLOADED) | Some(api::codes::SHUTTING_DOWN)
                    ) =>
                {
                    if e.code() == Some(api::codes::SHUTTING_DOWN) {
                        node += 1;
                    }
                    last = e.to_string();
                }
                Err(e) => return Err(LedgerFailure::Refused(e)),
            }
            tracing::debug!(what, attempt, error = %last, "ledger call will be retried");
            if attempt < self.attempts_max {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        Err(if maybe_applied {
            LedgerFailure::Unknown(format!("{what}: {last}"))
        } else {
            LedgerFailure::Unavailable(format!("{what}: {last}"))
        })
    }
}
