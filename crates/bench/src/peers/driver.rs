//! The one interface the load generator drives every system through
//! ([`Driver`]), and what the peers' start-up shares (free ports, waiting
//! until a server is ready).

use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use crate::error::{BenchError, Result};
use crate::tracker::StoredAccount;
use crate::workload::AccountSet;

/// Connections a driver gets for creating and reading accounts.
pub const SETUP_PARALLELISM: usize = 8;

/// The answer to one authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Denied,
    /// No answer. `maybe_applied` is true when the request may still have
    /// taken effect (a timeout, a lost connection, `504`), false when it
    /// certainly did not (`503`, a refused request, retries exhausted).
    Failed {
        kind: &'static str,
        maybe_applied: bool,
    },
}

impl Outcome {
    pub fn failed(kind: &'static str, maybe_applied: bool) -> Self {
        Self::Failed { kind, maybe_applied }
    }
}

/// One item of a batch: the account's index in its set and the amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchItem {
    pub account: usize,
    pub amount_atomic: u64,
}

/// A connected client of one system, sized for one run. `worker` is the
/// caller's worker number (drivers use it to pick a connection).
pub trait Driver: Send + Sync + 'static {
    /// Creates the accounts of `set`, each with `set.cap_atomic` and
    /// nothing spent.
    fn create_accounts(&self, set: &AccountSet) -> impl Future<Output = Result<()>> + Send;

    fn authorize(
        &self,
        worker: usize,
        set: &AccountSet,
        account: usize,
        amount_atomic: u64,
    ) -> impl Future<Output = Outcome> + Send;

    /// One request carrying many authorizations; one outcome per item, in
    /// order.
    fn authorize_batch(
        &self,
        worker: usize,
        set: &AccountSet,
        items: &[BatchItem],
    ) -> impl Future<Output = Vec<Outcome>> + Send;

    /// The stored state of every account of `set`, by index (`None` where
    /// the peer does not have it).
    fn read_accounts(&self, set: &AccountSet) -> impl Future<Output = Result<Vec<Option<StoredAccount>>>> + Send;
}

/// The HTTP client of a driver with `parallelism` workers: as many idle
/// connections kept per host, each request bounded by `timeout`.
pub fn http_client(parallelism: usize, timeout: Duration) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(parallelism.max(1))
        .timeout(timeout)
        .tcp_nodelay(true)
        .build()?)
}

/// Ports the OS says are free on 127.0.0.1 right now (each probed by
/// binding, all held until every one is chosen so none repeats).
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| BenchError::io("finding a free port", e))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| BenchError::io("reading a bound port", e))
        })
        .collect()
}

/// Waits for `check` to succeed, polling every `interval` until
/// `seconds_max` have passed; the error names the last failure.
pub async fn wait_until<F, Fut, T>(
    what: &str,
    seconds_max: u64,
    interval: std::time::Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds_max);
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(detail) => {
                if tokio::time::Instant::now() + interval > deadline {
                    return Err(BenchError::NotReady {
                        what: what.to_string(),
                        seconds_max,
                        detail,
                    });
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(6).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
    }

    #[tokio::test]
    async fn wait_until_gives_up() {
        let r: Result<()> = wait_until("never", 0, Duration::from_millis(10), || async {
            Err("no".to_string())
        })
        .await;
        assert!(matches!(r, Err(BenchError::NotReady { .. })));
        let mut n = 0;
        let v = wait_until("soon", 5, Duration::from_millis(1), || {
            n += 1;
            let n = n;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err("not yet".into())
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }
}
