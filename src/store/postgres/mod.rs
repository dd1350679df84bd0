//! The PostgreSQL implementation of the ledger's interface (`store::ledger`), for several nodes
//! sharing one database: [`PgLedgerDb`] owns the connection pool and the schema's migrations
//! (`migrations/postgres/`), and runs each read in a `READ ONLY` transaction and each write in a
//! `READ COMMITTED` one, committed when its closure succeeds; [`Pg`] is what the closure gets, one
//! transaction behind `&self` (in a `RefCell`) that implements every trait, one file per area.
//! Unlike SQLite's single writer, writes here run at the same time (on other nodes too), so every
//! method that reads and then writes locks what it reads first (the job's row, `FOR UPDATE`), and
//! the claim skips jobs another claim holds (`FOR UPDATE … SKIP LOCKED`). Blocking throughout:
//! call from a blocking thread, never an async one.

pub mod files; // run files: pieces of logs and results
mod jobs; // JobLedger
mod nodes; // NodeLedger, the node's identity, the firing lock
mod people; // UserLedger, SessionLedger, ApiTokenLedger
pub mod pool; // the r2d2 manager of `postgres::Client`s
mod records; // SavedQueryLedger, AuditLedger, MaintenanceLedger
mod runs; // RunLedger: acceptance, claims, ends

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, RwLock};

use postgres::types::ToSql;
use postgres::{IsolationLevel, Row, Statement, Transaction};

use crate::pg_connect::PgTarget;
pub use nodes::{FiringLock, NodeId};
use pool::Statements;

use super::Error;

/// The schema's migrations in order; `ledger_schema.version` records how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_ledger.sql"),
    include_str!("../../../migrations/postgres/0002_jobs_changes.sql"),
    include_str!("../../../migrations/postgres/0003_login_key.sql"),
];

/// The migration (its version) after whose SQL every user's login key is computed, in Rust.
const LOGIN_KEY_MIGRATION: i64 = 3;

/// The schema version this labcron brings a database to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key migrations hold (`pg_advisory_xact_lock`), so nodes starting together
/// apply each migration once: "labcron" in ASCII.
const MIGRATE_LOCK: i64 = 0x006c_6162_6372_6f6e;

/// Connections a node keeps at most.
const POOL_SIZE: u32 = 16;

/// A statement's parameters.
type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// A PostgreSQL ledger: a pool of connections to one database. Cheap to clone.
#[derive(Clone)]
pub struct PgLedgerDb {
    pool: std::sync::Arc<pool::Owned>,
    /// The URL without its password, for messages.
    shown: String,
    /// The server and its TLS connector (the firing lock opens a connection of its own).
    target: Arc<PgTarget>,
    /// Who this node is, once registered: runs' ends are written under it.
    node: Arc<RwLock<Option<Arc<NodeId>>>>,
    /// The backend pid of the connection holding the firing lock for this node, 0 while not
    /// held: a fire checks it still holds the lock in its own transaction.
    firing_pid: Arc<AtomicI32>,
}

impl std::fmt::Debug for PgLedgerDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedgerDb")
            .field("url", &self.shown)
            .finish()
    }
}

impl PgLedgerDb {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and brings
    /// its schema up to date. Blocking.
    pub fn open(url: &str) -> Result<PgLedgerDb, Error> {
        let target =
            PgTarget::open(url).map_err(|e| Error::open(&PathBuf::from("postgres://…"), e))?;
        let shown = target.shown();
        let fail = |reason: String| Error::Open {
            path: PathBuf::from(&shown),
            reason,
        };
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(pool::CHECKOUT_TIMEOUT)
            .build(pool::Manager::new(target.clone()))
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        {
            let mut conn = pool.get().map_err(|e| fail(e.to_string()))?;
            migrate(&mut conn.client).map_err(|e| fail(e.to_string()))?;
        }
        Ok(PgLedgerDb {
            pool: std::sync::Arc::new(pool::Owned::new(pool)),
            shown,
            target: Arc::new(target),
            node: Arc::default(),
            firing_pid: Arc::default(),
        })
    }

    /// Sets who this node is (its name and incarnation, as registered in `nodes`): from then on
    /// a run's end is written only when the run is this node's and the node still holds that
    /// incarnation (not declared lost). Unset, ends are written whoever claimed the run.
    pub fn set_node(&self, node: Option<NodeId>) {
        let mut slot = self.node.write().unwrap_or_else(|p| p.into_inner());
        *slot = node.map(Arc::new);
    }

    /// Who this node is, if set.
    pub fn node(&self) -> Option<Arc<NodeId>> {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A firing lock for this node (`set_node`) on a connection of its own (not taken yet: see
    /// `FiringLock::hold`).
    pub fn firing_lock(&self) -> FiringLock {
        let name = self.node().map(|n| n.name.clone()).unwrap_or_default();
        FiringLock::new((*self.target).clone(), &name, self.firing_pid.clone())
    }

    /// The backend pid of this node's firing-lock connection while it holds the lock, else 0
    /// (see `NodeLedger::still_fires`).
    pub fn firing_pid(&self) -> i32 {
        self.firing_pid.load(Ordering::Relaxed)
    }

    /// The database's URL without its password.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Runs `f` in a `READ ONLY` transaction: one consistent view of the ledger. Blocking.
    pub fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<Error>,
        F: FnOnce(&Pg<'_>) -> Result<T, E>,
    {
        let mut conn = self.pool.get().map_err(Error::unreachable)?;
        let conn = &mut *conn;
        let tx = conn
            .client
            .build_transaction()
            .read_only(true)
            .start()
            .map_err(Error::from)?;
        finish(tx, &mut conn.statements, self.node(), f)
    }

    /// Runs `f` in a `READ COMMITTED` transaction, committed when `f` succeeds (the answer comes
    /// after the commit, so a success is durable) and rolled back when it fails. Blocking.
    pub fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<Error>,
        F: FnOnce(&Pg<'_>) -> Result<T, E>,
    {
        let mut conn = self.pool.get().map_err(Error::unreachable)?;
        let conn = &mut *conn;
        let tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .map_err(Error::from)?;
        finish(tx, &mut conn.statements, self.node(), f)
    }

    /// The jobs table's change counter (bumped by a trigger whenever a job is added, deleted or
    /// changed): the scheduler's change marker. Blocking.
    pub fn jobs_changes(&self) -> Result<i64, Error> {
        let mut conn = self.pool.get().map_err(Error::unreachable)?;
        Ok(conn
            .client
            .query_one(
                "SELECT counter FROM ledger_changes WHERE name = 'jobs'",
                &[],
            )?
            .try_get(0)?)
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, Error> {
        let mut conn = self.pool.get().map_err(Error::unreachable)?;
        Ok(conn
            .client
            .query_one("SELECT max(version) FROM ledger_schema", &[])?
            .try_get::<_, Option<i64>>(0)?
            .unwrap_or(0))
    }
}

/// Runs `f` on the transaction; commits when it succeeds, rolls back when it fails (a panic in
/// `f` rolls back too: the transaction's drop does it).
fn finish<'c, T, E, F>(
    tx: Transaction<'c>,
    statements: &'c mut Statements,
    node: Option<Arc<NodeId>>,
    f: F,
) -> Result<T, E>
where
    E: From<Error>,
    F: FnOnce(&Pg<'_>) -> Result<T, E>,
{
    let pg = Pg {
        tx: RefCell::new(tx),
        statements: RefCell::new(statements),
        node,
    };
    let result = f(&pg);
    let tx = pg.tx.into_inner();
    match result {
        Ok(value) => {
            tx.commit().map_err(Error::from)?;
            Ok(value)
        }
        Err(e) => {
            // The closure's error is the one worth reporting; a failed rollback only means the
            // connection is gone, and the server drops the transaction with it.
            let _ = tx.rollback();
            Err(e)
        }
    }
}

/// Applies the migrations the database lacks, each in a transaction of its own under the
/// migration lock (a node starting at the same time waits, then sees it applied). Refuses a
/// database a newer labcron has migrated further.
fn migrate(client: &mut postgres::Client) -> Result<(), Error> {
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
        // Quietly: the server's NOTICE "relation … already exists, skipping" at every start of
        // every node is not news (SET LOCAL ends with the transaction).
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS ledger_schema (version BIGINT NOT NULL)",
        )?;
        let current: i64 = tx
            .query_one("SELECT max(version) FROM ledger_schema", &[])?
            .try_get::<_, Option<i64>>(0)?
            .unwrap_or(0);
        if current > MIGRATIONS.len() as i64 {
            return Err(Error::Corrupt(format!(
                "the database's schema is at version {current}, newer than this labcron's {}",
                MIGRATIONS.len()
            )));
        }
        if current >= version {
            tx.commit()?;
            continue;
        }
        tx.batch_execute(sql)?;
        if version == LOGIN_KEY_MIGRATION {
            for (id, login_name) in people::fill_login_keys(&mut tx)? {
                tracing::warn!(
                    user_id = id,
                    login_name = %login_name,
                    "this user's login name is another's under Unicode case folding: it cannot sign in until an admin renames it"
                );
            }
        }
        tx.execute("DELETE FROM ledger_schema", &[])?;
        tx.execute(
            "INSERT INTO ledger_schema (version) VALUES ($1)",
            &[&version],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// The ledger inside one PostgreSQL transaction, as `PgLedgerDb::read` and `write` hand it out.
/// The transaction needs `&mut` for every statement while the traits take `&self`: the
/// `RefCell` is borrowed for one statement at a time, never across a call.
pub struct Pg<'a> {
    tx: RefCell<Transaction<'a>>,
    /// The connection's prepared statements (they outlive the transaction).
    statements: RefCell<&'a mut Statements>,
    /// Who this node is (`PgLedgerDb::set_node`), for the guard on runs' ends.
    node: Option<Arc<NodeId>>,
}

impl Pg<'_> {
    /// The statement for `sql`, prepared on this connection at its first use.
    fn statement(&self, sql: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement);
        }
        let statement = self.tx.borrow_mut().prepare(sql)?;
        self.statements.borrow_mut().keep(sql, statement.clone());
        Ok(statement)
    }

    /// Every row of a query.
    fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.statement(sql)?;
        Ok(self.tx.borrow_mut().query(&statement, params)?)
    }

    /// The row of a query that returns at most one.
    fn row(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        let statement = self.statement(sql)?;
        Ok(self.tx.borrow_mut().query_opt(&statement, params)?)
    }

    /// The one row of a query that always returns one (an aggregate).
    fn one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        let statement = self.statement(sql)?;
        Ok(self.tx.borrow_mut().query_one(&statement, params)?)
    }

    /// How many rows a statement changed.
    fn exec(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let statement = self.statement(sql)?;
        Ok(self.tx.borrow_mut().execute(&statement, params)?)
    }

    /// Whether a query returns a row.
    fn exists(&self, sql: &str, params: Params<'_>) -> Result<bool, Error> {
        Ok(self.row(sql, params)?.is_some())
    }

    /// Locks a job's row until the transaction ends (other nodes' job-scoped writes wait), so
    /// what this write reads about the job's runs stays true until it commits.
    fn lock_job(&self, job_id: i64) -> Result<(), Error> {
        self.exec("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&job_id])?;
        Ok(())
    }

    /// Locks the row of the job run `run_id` belongs to (see `lock_job`): a run's writes lock
    /// its job first, in the same order as an acceptance or a claim, so they cannot deadlock.
    fn lock_job_of_run(&self, run_id: i64) -> Result<(), Error> {
        self.exec(
            "SELECT 1 FROM jobs j JOIN runs r ON r.job_id = j.id WHERE r.id = $1 FOR UPDATE OF j",
            &[&run_id],
        )?;
        Ok(())
    }
}

/// A stored text that must be one of an enum's names.
fn parse<T: std::str::FromStr>(row: &Row, column: usize, what: &str) -> Result<T, Error> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|_| Error::Corrupt(format!("bad {what}: {text:?}")))
}

/// `query` lowered with LIKE's wildcards escaped, so `%` and `_` match themselves (as in the
/// SQLite implementation; backslash is the escape).
fn like_pattern(query: Option<&str>) -> Option<String> {
    query.map(|q| {
        q.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    })
}

/// A statement's parameters gathered while its WHERE clause is written.
#[derive(Default)]
struct Bound {
    values: Vec<Box<dyn ToSql + Sync>>,
}

impl Bound {
    /// Adds a value; its placeholder (`$n`).
    fn push(&mut self, value: impl ToSql + Sync + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values.iter().map(|v| v.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern(Some("A_b%c\\")).unwrap(), "a\\_b\\%c\\\\");
        assert_eq!(like_pattern(None), None);
    }
}
