//! The gateway's named limits ([`Limits`]) and the error a configuration
//! value is refused with ([`ConfigError`]): below the configuration and
//! what it is built from (the upstream policy, the tool rules).

use std::time::Duration;

/// Named limits for bodies, waits and retries.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest `POST /v1/fetch` body the gateway reads.
    pub request_body_bytes_max: usize,
    /// Largest upstream response body relayed to the agent.
    pub response_body_bytes_max: usize,
    /// Most headers an agent may ask the gateway to send upstream.
    pub upstream_headers_max: usize,
    /// Longest target URL (the ledger keeps at most this much of a
    /// receipt's resource URL).
    pub url_bytes_max: usize,
    /// One upstream exchange (request sent → whole body read). After a
    /// payment was sent, running out of it means "outcome unknown".
    pub upstream_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// One call to a ledger node.
    pub ledger_timeout: Duration,
    /// Tries of one ledger call when the answer was "nothing applied" or
    /// "unknown" (the retry reuses the idempotency key or reference).
    pub ledger_attempts_max: u32,
    /// First pause between ledger tries; doubles each time.
    pub ledger_retry_pause: Duration,
    /// Requests served at once before the gateway sheds load (503).
    pub requests_in_flight_max: usize,
    /// Whole-request deadline for the agent (a safety net: a payment in
    /// flight keeps running to its end in the background).
    pub request_timeout: Duration,
    /// Resolving an upstream's host name (before anything is sent).
    pub upstream_resolve_timeout: Duration,
    /// Most addresses one upstream host name may resolve to; every one is
    /// checked, more are refused.
    pub upstream_addresses_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_body_bytes_max: 1 << 20,
            response_body_bytes_max: 8 << 20,
            upstream_headers_max: 64,
            url_bytes_max: 2048,
            upstream_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            ledger_timeout: Duration::from_secs(10),
            ledger_attempts_max: 5,
            ledger_retry_pause: Duration::from_millis(100),
            requests_in_flight_max: 1024,
            request_timeout: Duration::from_secs(120),
            upstream_resolve_timeout: Duration::from_secs(5),
            upstream_addresses_max: 16,
        }
    }
}

/// A configuration value that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}
