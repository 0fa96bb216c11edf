//! The harness's error type. Only `main` turns these into `anyhow` errors.

use std::path::PathBuf;

/// Everything that can go wrong while starting peers, driving load or
/// writing results.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start {what} ({program}): {source}")]
    Spawn {
        what: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited early ({status}); last log lines:\n{log_tail}")]
    Exited {
        what: String,
        status: String,
        log_tail: String,
    },
    #[error("{what} was not ready within {seconds_max} s: {detail}")]
    NotReady {
        what: String,
        seconds_max: u64,
        detail: String,
    },
    #[error("{system}: {detail}")]
    Protocol { system: &'static str, detail: String },
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("postgres: {}", postgres_detail(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid amount {0:?}")]
    Amount(String),
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("chart {name}: {detail}")]
    Chart { name: String, detail: String },
}

/// tokio-postgres prints only "db error"; the server's message is in the
/// source.
fn postgres_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

impl BenchError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn protocol(system: &'static str, detail: impl Into<String>) -> Self {
        Self::Protocol {
            system,
            detail: detail.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, BenchError>;
