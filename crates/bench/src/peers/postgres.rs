//! PostgreSQL: one unreplicated server with `fsync=on` and
//! `synchronous_commit=on` (a commit returns after its WAL is flushed), one
//! row per account, and two ways to authorize:
//!
//! - conditional update: `UPDATE budgets SET spent = spent + $2 WHERE id =
//!   $1 AND spent + $2 <= cap RETURNING spent`, one autocommit statement;
//!   under READ COMMITTED a waiting updater re-checks the condition against
//!   the row it waited for, so concurrent updates cannot overspend;
//! - select for update: `BEGIN; SELECT cap, spent ... FOR UPDATE; UPDATE;
//!   COMMIT`, the classic lock-then-write transaction.
//!
//! A batch is one transaction: the conditional updates pipelined in account
//! order (so concurrent batches lock rows in one order and cannot
//! deadlock), or one `SELECT ... ORDER BY id FOR UPDATE` and one `UPDATE
//! ... FROM unnest(...)`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement, Transaction};

use super::driver::{free_ports, wait_until, BatchItem, Driver, Outcome};
use crate::error::{BenchError, Result};
use crate::procs::{log_tail, RunAs, ServerProcess};
use crate::tracker::StoredAccount;
use crate::workload::AccountSet;

/// Seconds the server gets to accept connections after starting.
const READY_SECONDS_MAX: u64 = 60;
/// Seconds initdb gets.
const INITDB_SECONDS_MAX: u64 = 120;
/// Connections opened at once while filling a pool.
const CONNECTS_PARALLEL_MAX: usize = 16;
/// Connections allowed beyond the pool: the setup driver's, and spare.
const CONNECTIONS_SPARE: usize = super::driver::SETUP_PARALLELISM + 10;
const USER: &str = "bench";
const DATABASE: &str = "postgres";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS budgets (
    id text PRIMARY KEY,
    cap bigint NOT NULL CHECK (cap >= 0),
    spent bigint NOT NULL DEFAULT 0 CHECK (spent >= 0 AND spent <= cap)
)";
const CONDITIONAL_UPDATE: &str =
    "UPDATE budgets SET spent = spent + $2 WHERE id = $1 AND spent + $2 <= cap RETURNING spent";
const SELECT_FOR_UPDATE: &str = "SELECT cap, spent FROM budgets WHERE id = $1 FOR UPDATE";
const SET_SPENT: &str = "UPDATE budgets SET spent = $2 WHERE id = $1";
const SELECT_MANY_FOR_UPDATE: &str = "SELECT id, cap, spent FROM budgets WHERE id = ANY($1) ORDER BY id FOR UPDATE";
const SET_MANY_SPENT: &str = "UPDATE budgets AS b SET spent = v.spent \
     FROM unnest($1::text[], $2::bigint[]) AS v(id, spent) WHERE b.id = v.id";

/// How the driver authorizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    ConditionalUpdate,
    SelectForUpdate,
}

/// A running PostgreSQL server.
pub struct PostgresServer {
    pub process: ServerProcess,
    pub port: u16,
}

/// The `postgres` system user's ids, when the harness runs as root
/// (PostgreSQL refuses to run as root).
fn server_user() -> Result<Option<RunAs>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| BenchError::io("reading /etc/passwd", e))?;
    parse_passwd_user(&passwd, "postgres").map(Some).ok_or_else(|| {
        BenchError::Config("running as root needs the 'postgres' user (apt-get install postgresql)".into())
    })
}

fn parse_passwd_user(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || fields[0] != name {
            return None;
        }
        Some(RunAs {
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
        })
    })
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
pub fn default_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn connection_string(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user={USER} dbname={DATABASE} connect_timeout=10")
}

async fn connect_one(port: u16) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(&connection_string(port), NoTls).await?;
    // The connection task ends when the client is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl PostgresServer {
    /// `initdb` into `root/data`, then starts the server on a free port
    /// with room for `pool_connections_max` clients, logging to
    /// `log_dir/<label>.log`.
    pub async fn start(
        bin_dir: &Path,
        root: &Path,
        log_dir: &Path,
        label: &str,
        pool_connections_max: usize,
    ) -> Result<Self> {
        let run_as = server_user()?;
        std::fs::create_dir_all(root).map_err(|e| BenchError::io(format!("creating {}", root.display()), e))?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(root, Some(user.uid), Some(user.gid))
                .map_err(|e| BenchError::io(format!("chown {}", root.display()), e))?;
        }
        let data = root.join("data");
        let log_path = log_dir.join(format!("{label}.log"));

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-instructions"]);
        let mut init = ServerProcess::spawn("initdb", initdb, &log_path, run_as, libc::SIGTERM)?;
        let status = wait_until("initdb", INITDB_SECONDS_MAX, Duration::from_millis(100), || {
            let state = match init.exit_status() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err("still running".to_string()),
                Err(e) => Err(e.to_string()),
            };
            async move { state }
        })
        .await?;
        if !status.success() {
            return Err(BenchError::Exited {
                what: "initdb".into(),
                status: status.to_string(),
                log_tail: log_tail(&log_path),
            });
        }

        let port = free_ports(1)?[0];
        let mut postgres = Command::new(bin_dir.join("postgres"));
        postgres.arg("-D").arg(&data);
        let settings = [
            format!("port={port}"),
            "listen_addresses=127.0.0.1".into(),
            format!("unix_socket_directories={}", root.display()),
            "fsync=on".into(),
            "synchronous_commit=on".into(),
            "full_page_writes=on".into(),
            format!("max_connections={}", pool_connections_max + CONNECTIONS_SPARE),
            "shared_buffers=256MB".into(),
            "logging_collector=off".into(),
            "log_min_messages=warning".into(),
        ];
        for setting in settings {
            postgres.arg("-c").arg(setting);
        }
        // SIGINT is PostgreSQL's fast shutdown.
        let mut process = ServerProcess::spawn(label, postgres, &log_path, run_as, libc::SIGINT)?;
        let ready = wait_until(
            "postgres",
            READY_SECONDS_MAX,
            Duration::from_millis(100),
            || async move {
                let client = connect_one(port).await.map_err(|e| e.to_string())?;
                client.batch_execute(SCHEMA).await.map_err(|e| e.to_string())
            },
        )
        .await;
        process.check_running()?;
        ready?;
        Ok(Self { process, port })
    }

    /// The postmaster; its backends are found as its children.
    pub fn roots(&self) -> Vec<(String, u32)> {
        vec![(self.process.label.clone(), self.process.pid())]
    }
}

struct Connection {
    client: Client,
    conditional_update: Statement,
    select_for_update: Statement,
    set_spent: Statement,
    select_many_for_update: Statement,
    set_many_spent: Statement,
}

impl Connection {
    async fn open(port: u16) -> Result<Self> {
        let client = connect_one(port).await?;
        Ok(Self {
            conditional_update: client.prepare(CONDITIONAL_UPDATE).await?,
            select_for_update: client.prepare(SELECT_FOR_UPDATE).await?,
            set_spent: client.prepare(SET_SPENT).await?,
            select_many_for_update: client.prepare(SELECT_MANY_FOR_UPDATE).await?,
            set_many_spent: client.prepare(SET_MANY_SPENT).await?,
            client,
        })
    }
}

/// A pool of connections sized to the run's concurrency (bounded by the
/// caller); worker `w` uses connection `w % n`, waiting its turn when
/// workers outnumber connections.
pub struct PostgresDriver {
    connections: Vec<Mutex<Connection>>,
    variant: Variant,
}

/// Where a request failed: before COMMIT nothing was applied; at COMMIT
/// the outcome is unknown.
enum Stage {
    Work,
    Commit,
}

fn failure(e: &tokio_postgres::Error, stage: Stage) -> Outcome {
    let kind = if e.is_closed() {
        "connection"
    } else if e.as_db_error().is_some() {
        "postgres_error"
    } else {
        "io"
    };
    let maybe_applied = matches!(stage, Stage::Commit) || e.is_closed() || kind == "io";
    Outcome::failed(kind, maybe_applied)
}

fn to_i64(amount_atomic: u64) -> i64 {
    i64::try_from(amount_atomic).unwrap_or(i64::MAX)
}

impl PostgresDriver {
    pub async fn connect(port: u16, connections: usize, variant: Variant) -> Result<Self> {
        let opened: Vec<Connection> = futures::stream::iter(0..connections.max(1))
            .map(|_| Connection::open(port))
            .buffer_unordered(CONNECTS_PARALLEL_MAX)
            .try_collect()
            .await?;
        Ok(Self {
            connections: opened.into_iter().map(Mutex::new).collect(),
            variant,
        })
    }

    fn connection(&self, worker: usize) -> &Mutex<Connection> {
        &self.connections[worker % self.connections.len()]
    }

    async fn select_for_update(&self, worker: usize, id: &str, amount: i64) -> Outcome {
        let mut conn = self.connection(worker).lock().await;
        let conn = &mut *conn;
        let tx = match conn.client.transaction().await {
            Ok(tx) => tx,
            Err(e) => return failure(&e, Stage::Work),
        };
        let row = match tx.query_opt(&conn.select_for_update, &[&id]).await {
            Ok(Some(row)) => row,
            Ok(None) => return Outcome::failed("unknown_account", false),
            Err(e) => return failure(&e, Stage::Work),
        };
        let (cap, spent): (i64, i64) = (row.get(0), row.get(1));
        if spent.saturating_add(amount) > cap {
            return match tx.commit().await {
                Ok(()) => Outcome::Denied,
                Err(e) => failure(&e, Stage::Work),
            };
        }
        if let Err(e) = tx.execute(&conn.set_spent, &[&id, &(spent + amount)]).await {
            return failure(&e, Stage::Work);
        }
        match tx.commit().await {
            Ok(()) => Outcome::Approved,
            Err(e) => failure(&e, Stage::Commit),
        }
    }

    /// One batch in one transaction: the variant's work, then the commit. A
    /// failure anywhere answers every item with it.
    async fn batch(&self, worker: usize, ids: &[String], items: &[BatchItem]) -> Vec<Outcome> {
        let mut conn = self.connection(worker).lock().await;
        let conn = &mut *conn;
        let all = |o: Outcome| vec![o; items.len()];
        let tx = match conn.client.transaction().await {
            Ok(tx) => tx,
            Err(e) => return all(failure(&e, Stage::Work)),
        };
        let work = match self.variant {
            Variant::ConditionalUpdate => batch_conditional(&tx, &conn.conditional_update, ids, items).await,
            Variant::SelectForUpdate => {
                batch_for_update(&tx, &conn.select_many_for_update, &conn.set_many_spent, ids, items).await
            }
        };
        let outcomes = match work {
            Ok(outcomes) => outcomes,
            Err(e) => return all(failure(&e, Stage::Work)),
        };
        match tx.commit().await {
            Ok(()) => outcomes,
            Err(e) => all(failure(&e, Stage::Commit)),
        }
    }
}

async fn batch_conditional(
    tx: &Transaction<'_>,
    statement: &Statement,
    ids: &[String],
    items: &[BatchItem],
) -> std::result::Result<Vec<Outcome>, tokio_postgres::Error> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].account);
    let amounts: Vec<i64> = items.iter().map(|i| to_i64(i.amount_atomic)).collect();
    let params: Vec<[&(dyn ToSql + Sync); 2]> = order.iter().map(|&i| [&ids[i] as _, &amounts[i] as _]).collect();
    // Issued together: the connection pipelines them, and the server
    // runs them one after another, in this order.
    let answers = futures::future::join_all(params.iter().map(|p| tx.query_opt(statement, p))).await;
    let mut outcomes = vec![Outcome::Denied; items.len()];
    for (&i, answer) in order.iter().zip(answers) {
        if answer?.is_some() {
            outcomes[i] = Outcome::Approved;
        }
    }
    Ok(outcomes)
}

async fn batch_for_update(
    tx: &Transaction<'_>,
    select_many_for_update: &Statement,
    set_many_spent: &Statement,
    ids: &[String],
    items: &[BatchItem],
) -> std::result::Result<Vec<Outcome>, tokio_postgres::Error> {
    let mut distinct: Vec<&str> = ids.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let rows = tx.query(select_many_for_update, &[&distinct]).await?;
    let mut accounts: HashMap<String, (i64, i64, bool)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get::<_, i64>(1), r.get::<_, i64>(2), false)))
        .collect();
    let outcomes: Vec<Outcome> = items
        .iter()
        .zip(ids)
        .map(|(item, id)| match accounts.get_mut(id) {
            None => Outcome::failed("unknown_account", false),
            Some((cap, spent, changed)) => {
                let amount = to_i64(item.amount_atomic);
                if spent.saturating_add(amount) > *cap {
                    Outcome::Denied
                } else {
                    *spent += amount;
                    *changed = true;
                    Outcome::Approved
                }
            }
        })
        .collect();
    let (changed_ids, changed_spent): (Vec<String>, Vec<i64>) = accounts
        .into_iter()
        .filter(|(_, (_, _, changed))| *changed)
        .map(|(id, (_, spent, _))| (id, spent))
        .unzip();
    if !changed_ids.is_empty() {
        tx.execute(set_many_spent, &[&changed_ids, &changed_spent]).await?;
    }
    Ok(outcomes)
}

impl Driver for PostgresDriver {
    async fn create_accounts(&self, set: &AccountSet) -> Result<()> {
        let conn = self.connection(0).lock().await;
        let count =
            i32::try_from(set.count).map_err(|_| BenchError::Config(format!("{} accounts are too many", set.count)))?;
        conn.client
            .execute(
                "INSERT INTO budgets (id, cap, spent) \
                 SELECT $1 || '-' || g, $2, 0 FROM generate_series(0, $3 - 1) AS g",
                &[&set.name, &to_i64(set.cap_atomic), &count],
            )
            .await?;
        Ok(())
    }

    async fn authorize(&self, worker: usize, set: &AccountSet, account: usize, amount_atomic: u64) -> Outcome {
        let id = set.key(account);
        let amount = to_i64(amount_atomic);
        match self.variant {
            Variant::ConditionalUpdate => {
                let conn = self.connection(worker).lock().await;
                // An autocommit statement: it returns once its commit is
                // flushed, and an error means it rolled back.
                match conn.client.query_opt(&conn.conditional_update, &[&id, &amount]).await {
                    Ok(Some(_)) => Outcome::Approved,
                    Ok(None) => Outcome::Denied,
                    Err(e) => failure(&e, Stage::Commit),
                }
            }
            Variant::SelectForUpdate => self.select_for_update(worker, &id, amount).await,
        }
    }

    async fn authorize_batch(&self, worker: usize, set: &AccountSet, items: &[BatchItem]) -> Vec<Outcome> {
        let ids: Vec<String> = items.iter().map(|i| set.key(i.account)).collect();
        self.batch(worker, &ids, items).await
    }

    async fn read_accounts(&self, set: &AccountSet) -> Result<Vec<Option<StoredAccount>>> {
        let conn = self.connection(0).lock().await;
        let rows = conn
            .client
            .query(
                "SELECT id, cap, spent FROM budgets WHERE id LIKE $1",
                &[&format!("{}-%", set.name)],
            )
            .await?;
        let mut out = vec![None; set.count];
        for row in rows {
            let id: String = row.get(0);
            let (cap, spent): (i64, i64) = (row.get(1), row.get(2));
            if let Some(index) = set.index_of(&id) {
                out[index] = Some(StoredAccount {
                    cap_atomic: u64::try_from(cap).unwrap_or(0),
                    used_atomic: u64::try_from(spent).unwrap_or(u64::MAX),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_user_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PostgreSQL:/var/lib/postgresql:/bin/bash\n";
        let user = parse_passwd_user(passwd, "postgres").unwrap();
        assert_eq!((user.uid, user.gid), (101, 104));
        assert!(parse_passwd_user(passwd, "nobody").is_none());
    }
}
