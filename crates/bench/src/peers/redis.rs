//! Redis: one unreplicated server with `appendonly yes` and `appendfsync
//! always` (the AOF is fsynced before replies go out), accounts as hashes
//! `{cap, spent}`, and authorization as a Lua check-and-increment script
//! run with EVALSHA, so the check and the increment are one atomic step.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use super::driver::{free_ports, wait_until, BatchItem, Driver, Outcome};
use crate::error::{BenchError, Result};
use crate::money::LUA_EXACT_ATOMIC_MAX;
use crate::procs::ServerProcess;
use crate::tracker::StoredAccount;
use crate::workload::AccountSet;

/// Seconds Redis gets to answer PING after starting.
const READY_SECONDS_MAX: u64 = 30;
/// Commands per pipeline when creating or reading accounts.
const PIPELINE_COMMANDS_MAX: usize = 1000;

/// Returns the new spent amount when approved, -1 when the cap denies it,
/// -2 when the account does not exist. Lua numbers are doubles, so caps and
/// amounts stay below 2^53 (checked when accounts are created); HINCRBY
/// itself is exact 64-bit integer arithmetic.
const AUTHORIZE_LUA: &str = r"
local v = redis.call('HMGET', KEYS[1], 'cap', 'spent')
if not v[1] then return -2 end
local amount = tonumber(ARGV[1])
if tonumber(v[2]) + amount > tonumber(v[1]) then return -1 end
return redis.call('HINCRBY', KEYS[1], 'spent', amount)
";

/// KEYS[i] with ARGV[i], in order, in one atomic step: 1 approved,
/// 0 denied, -2 unknown account.
const AUTHORIZE_BATCH_LUA: &str = r"
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'cap', 'spent')
  if not v[1] then
    out[i] = -2
  else
    local amount = tonumber(ARGV[i])
    if tonumber(v[2]) + amount > tonumber(v[1]) then
      out[i] = 0
    else
      redis.call('HINCRBY', KEYS[i], 'spent', amount)
      out[i] = 1
    end
  end
end
return out
";

/// A running Redis server.
pub struct RedisServer {
    pub process: ServerProcess,
    pub port: u16,
}

impl RedisServer {
    pub async fn start(binary: &Path, data_dir: &Path, log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| BenchError::io(format!("creating {}", data_dir.display()), e))?;
        let port = free_ports(1)?[0];
        let mut command = Command::new(binary);
        command
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .arg("--dir")
            .arg(data_dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            // No RDB snapshots: the AOF is the durability mechanism.
            .args(["--save", ""])
            .args(["--daemonize", "no", "--loglevel", "warning"]);
        let mut process = ServerProcess::start("redis", command, log_dir)?;
        let client = open_client(port)?;
        let check = || {
            let client = client.clone();
            async move {
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        let ready = wait_until("redis", READY_SECONDS_MAX, Duration::from_millis(100), check).await;
        process.check_running()?;
        ready?;
        Ok(Self { process, port })
    }

    pub fn roots(&self) -> Vec<(String, u32)> {
        vec![(self.process.label.clone(), self.process.pid())]
    }
}

fn open_client(port: u16) -> Result<redis::Client> {
    Ok(redis::Client::open(format!("redis://127.0.0.1:{port}/"))?)
}

/// Multiplexed connections (each pipelines its callers' commands);
/// worker `w` uses connection `w % n`.
pub struct RedisDriver {
    connections: Vec<MultiplexedConnection>,
    authorize: Script,
    authorize_batch: Script,
}

impl RedisDriver {
    pub async fn connect(port: u16, connections: usize, request_timeout: Duration) -> Result<Self> {
        let client = open_client(port)?;
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(request_timeout))
            .set_connection_timeout(Some(request_timeout));
        let mut conns = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            conns.push(client.get_multiplexed_async_connection_with_config(&config).await?);
        }
        let driver = Self {
            connections: conns,
            authorize: Script::new(AUTHORIZE_LUA),
            authorize_batch: Script::new(AUTHORIZE_BATCH_LUA),
        };
        let mut conn = driver.connections[0].clone();
        driver.authorize.load_async(&mut conn).await?;
        driver.authorize_batch.load_async(&mut conn).await?;
        Ok(driver)
    }

    fn connection(&self, worker: usize) -> MultiplexedConnection {
        self.connections[worker % self.connections.len()].clone()
    }
}

fn key(set: &AccountSet, index: usize) -> String {
    format!("acct:{}", set.key(index))
}

fn failure(e: &redis::RedisError) -> Outcome {
    if e.is_timeout() {
        Outcome::failed("timeout", true)
    } else if e.is_io_error() || e.is_connection_dropped() {
        Outcome::failed("connection", true)
    } else {
        // A server-side error (e.g. a script error) applied nothing.
        Outcome::failed("redis_error", false)
    }
}

impl Driver for RedisDriver {
    async fn create_accounts(&self, set: &AccountSet) -> Result<()> {
        if set.cap_atomic >= LUA_EXACT_ATOMIC_MAX {
            return Err(BenchError::Config(format!(
                "cap {} is too large for exact Lua arithmetic",
                set.cap_atomic
            )));
        }
        let mut conn = self.connection(0);
        let indexes: Vec<usize> = (0..set.count).collect();
        for chunk in indexes.chunks(PIPELINE_COMMANDS_MAX) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.cmd("HSET")
                    .arg(key(set, i))
                    .arg("cap")
                    .arg(set.cap_atomic)
                    .arg("spent")
                    .arg(0)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    async fn authorize(&self, worker: usize, set: &AccountSet, account: usize, amount_atomic: u64) -> Outcome {
        let mut conn = self.connection(worker);
        let answer: redis::RedisResult<i64> = self
            .authorize
            .key(key(set, account))
            .arg(amount_atomic)
            .invoke_async(&mut conn)
            .await;
        match answer {
            Ok(n) if n > 0 => Outcome::Approved,
            Ok(-1) => Outcome::Denied,
            Ok(-2) => Outcome::failed("unknown_account", false),
            Ok(_) => Outcome::failed("protocol", false),
            Err(e) => failure(&e),
        }
    }

    async fn authorize_batch(&self, worker: usize, set: &AccountSet, items: &[BatchItem]) -> Vec<Outcome> {
        let mut conn = self.connection(worker);
        let mut invocation = self.authorize_batch.prepare_invoke();
        for item in items {
            invocation.key(key(set, item.account)).arg(item.amount_atomic);
        }
        let answer: redis::RedisResult<Vec<i64>> = invocation.invoke_async(&mut conn).await;
        match answer {
            Ok(codes) if codes.len() == items.len() => codes
                .into_iter()
                .map(|c| match c {
                    1 => Outcome::Approved,
                    0 => Outcome::Denied,
                    -2 => Outcome::failed("unknown_account", false),
                    _ => Outcome::failed("protocol", false),
                })
                .collect(),
            Ok(_) => vec![Outcome::failed("protocol", false); items.len()],
            Err(e) => vec![failure(&e); items.len()],
        }
    }

    async fn read_accounts(&self, set: &AccountSet) -> Result<Vec<Option<StoredAccount>>> {
        let mut conn = self.connection(0);
        let mut out = Vec::with_capacity(set.count);
        let indexes: Vec<usize> = (0..set.count).collect();
        for chunk in indexes.chunks(PIPELINE_COMMANDS_MAX) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.cmd("HMGET").arg(key(set, i)).arg("cap").arg("spent");
            }
            let rows: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut conn).await?;
            out.extend(rows.into_iter().map(|row| match row {
                (Some(cap_atomic), Some(used_atomic)) => Some(StoredAccount {
                    cap_atomic,
                    used_atomic,
                }),
                _ => None,
            }));
        }
        Ok(out)
    }
}
