//! The systems under test and the one interface the load generator drives
//! them through.
//!
//! [`driver`] is the interface (re-exported here); each system's module
//! starts its servers and implements it.

pub mod driver;
pub mod etcd;
pub mod postgres;
pub mod redis;
pub mod spendcap;

use serde::{Deserialize, Serialize};

pub use self::driver::{free_ports, wait_until, BatchItem, Driver, Outcome, SETUP_PARALLELISM};

/// The systems the harness compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// Three etcd members; read, then a mod_revision compare-and-swap txn.
    Etcd,
    /// One PostgreSQL server; one conditional UPDATE per authorization.
    Postgres,
    /// One PostgreSQL server; BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT.
    PostgresForUpdate,
    /// One Redis server; a Lua check-and-increment script (EVALSHA).
    Redis,
    /// Three spendcap nodes; requests spread over all of them.
    Spendcap,
    /// Three spendcap nodes; requests sent to the leader only.
    SpendcapLeader,
}

impl System {
    pub const ALL: [System; 6] = [
        Self::Spendcap,
        Self::SpendcapLeader,
        Self::Etcd,
        Self::Postgres,
        Self::PostgresForUpdate,
        Self::Redis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Postgres => "postgres",
            Self::PostgresForUpdate => "postgres-for-update",
            Self::Redis => "redis",
            Self::Spendcap => "spendcap",
            Self::SpendcapLeader => "spendcap-leader",
        }
    }

    /// How the system stores and replicates, for the report.
    pub fn topology(self) -> &'static str {
        match self {
            Self::Etcd => "3 replicas (Raft), fsync",
            Self::Postgres | Self::PostgresForUpdate => "1 node, unreplicated, fsync + synchronous_commit",
            Self::Redis => "1 node, unreplicated, AOF appendfsync always",
            Self::Spendcap | Self::SpendcapLeader => "3 replicas (Raft), RocksDB fsync",
        }
    }

    /// The server program, whose version the report shows.
    pub fn program(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Postgres | Self::PostgresForUpdate => "postgres",
            Self::Redis => "redis",
            Self::Spendcap | Self::SpendcapLeader => "spendcap",
        }
    }
}
