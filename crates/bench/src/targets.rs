//! A started system as the runner sees it ([`Target`]): how to connect a
//! driver sized for a run, which processes to measure, whether its servers
//! still run. One implementation per peer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::peers::etcd::{EtcdCluster, EtcdDriver};
use crate::peers::postgres::{PostgresDriver, PostgresServer, Variant};
use crate::peers::redis::{RedisDriver, RedisServer};
use crate::peers::spendcap::{DriverSettings, Routing, SessionTokens, SpendcapCluster, SpendcapDriver};
use crate::peers::Driver;

/// A started system: how to connect a driver sized for a run, and which
/// processes to measure.
pub(crate) trait Target {
    type D: Driver;
    fn connect(&self, parallelism: usize) -> impl Future<Output = Result<Self::D>> + Send;
    fn roots(&self) -> Vec<(String, u32)>;
    fn check_running(&mut self) -> Result<()>;
}

pub(crate) struct EtcdTarget {
    pub(crate) cluster: EtcdCluster,
    pub(crate) timeout: Duration,
    pub(crate) attempts_max: u32,
}

impl Target for EtcdTarget {
    type D = EtcdDriver;
    async fn connect(&self, parallelism: usize) -> Result<EtcdDriver> {
        EtcdDriver::connect(
            self.cluster.client_urls.clone(),
            parallelism,
            self.timeout,
            self.attempts_max,
        )
    }
    fn roots(&self) -> Vec<(String, u32)> {
        self.cluster.roots()
    }
    fn check_running(&mut self) -> Result<()> {
        self.cluster.members.iter_mut().try_for_each(|m| m.check_running())
    }
}

pub(crate) struct PostgresTarget {
    pub(crate) server: PostgresServer,
    pub(crate) variant: Variant,
    pub(crate) pool_max: usize,
}

impl Target for PostgresTarget {
    type D = PostgresDriver;
    async fn connect(&self, parallelism: usize) -> Result<PostgresDriver> {
        PostgresDriver::connect(self.server.port, parallelism.min(self.pool_max), self.variant).await
    }
    fn roots(&self) -> Vec<(String, u32)> {
        self.server.roots()
    }
    fn check_running(&mut self) -> Result<()> {
        self.server.process.check_running()
    }
}

pub(crate) struct RedisTarget {
    pub(crate) server: RedisServer,
    pub(crate) connections_max: usize,
    pub(crate) timeout: Duration,
}

impl Target for RedisTarget {
    type D = RedisDriver;
    async fn connect(&self, parallelism: usize) -> Result<RedisDriver> {
        RedisDriver::connect(self.server.port, parallelism.min(self.connections_max), self.timeout).await
    }
    fn roots(&self) -> Vec<(String, u32)> {
        self.server.roots()
    }
    fn check_running(&mut self) -> Result<()> {
        self.server.process.check_running()
    }
}

pub(crate) struct SpendcapTarget {
    pub(crate) cluster: SpendcapCluster,
    pub(crate) routing: Routing,
    pub(crate) settings: DriverSettings,
    pub(crate) tokens: Arc<SessionTokens>,
}

impl Target for SpendcapTarget {
    type D = SpendcapDriver;
    async fn connect(&self, parallelism: usize) -> Result<SpendcapDriver> {
        let endpoints = match self.routing {
            Routing::AllNodes => self.cluster.api_urls.clone(),
            Routing::LeaderOnly => vec![self.cluster.leader_url().await?],
        };
        SpendcapDriver::connect(endpoints, parallelism, self.settings.clone(), self.tokens.clone())
    }
    fn roots(&self) -> Vec<(String, u32)> {
        self.cluster.roots()
    }
    fn check_running(&mut self) -> Result<()> {
        self.cluster.nodes.iter_mut().try_for_each(|n| n.check_running())
    }
}
