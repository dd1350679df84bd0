//! The ledger: one SQLite file (`<data dir>/labcron.db`) in WAL mode. Every SQL statement of the
//! server lives under this module. Reads use a small r2d2 pool; all writes go through one writer
//! connection in `BEGIN IMMEDIATE` transactions, so writers never fail with SQLITE_BUSY against each
//! other. Blocking work runs on tokio's blocking pool; no connection is held across an `.await`.

pub mod jobs;
pub mod maintenance; // ledger reads of the built-in INTERNAL tasks
pub mod queries; // saved queries
pub mod runs;
pub mod sessions;
pub mod users;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::ApiError;

/// Migrations in order; `PRAGMA user_version` records how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema.sql"),
    include_str!("../../migrations/0002_job_webhook_url.sql"),
    include_str!("../../migrations/0004_run_task.sql"),
    // Issue 13's migration runs after 0004, which main's ledgers already have as version 3.
    include_str!("../../migrations/0003_retries_chains.sql"),
];

/// Handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Db {
    readers: r2d2::Pool<SqliteConnectionManager>,
    writer: Arc<Mutex<Connection>>,
}

fn configure_connection(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;",
    )
}

impl Db {
    /// Opens (creating if needed) the ledger at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        let mut writer = Connection::open(path)
            .with_context(|| format!("cannot open ledger {}", path.display()))?;
        configure_connection(&writer)?;
        migrate(&mut writer)?;
        restrict_ledger_files(path)?;
        let manager = SqliteConnectionManager::file(path)
            // Readers are read-write connections told never to write, which keeps WAL
            // shared-memory handling ordinary.
            .with_init(|c| {
                c.execute_batch(
                    "PRAGMA busy_timeout = 5000; PRAGMA temp_store = MEMORY; PRAGMA query_only = ON;",
                )
            });
        let readers = r2d2::Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .build(manager)
            .context("cannot open ledger read pool")?;
        Ok(Db {
            readers,
            writer: Arc::new(Mutex::new(writer)),
        })
    }

    /// Runs `f` with a read-only connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ApiError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            f(&conn)
        })
        .await?
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction on the writer; commits when `f` succeeds.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T, ApiError> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || write_blocking(&writer, f)).await?
    }

    /// The blocking form of [`Db::write`], for code already on a blocking thread.
    pub fn write_sync<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Transaction) -> Result<T, ApiError>,
    {
        write_blocking(&self.writer, f)
    }

    /// The blocking form of [`Db::read`].
    pub fn read_sync<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Connection) -> Result<T, ApiError>,
    {
        let conn = self.readers.get()?;
        f(&conn)
    }

    /// Quick liveness check for `/health`.
    pub async fn ping(&self) -> bool {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .is_ok()
    }
}

fn write_blocking<T, F>(writer: &Mutex<Connection>, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Transaction) -> Result<T, ApiError>,
{
    // A panic while holding the lock leaves the connection usable (the transaction rolled back
    // on drop), so a poisoned mutex is recovered rather than propagated.
    let mut conn = writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Makes the ledger and its `-wal`/`-shm` companions private to the server's user (0600): they
/// hold password and token hashes. Ledgers made by older versions (0644) are tightened here too.
fn restrict_ledger_files(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut names = vec![path.as_os_str().to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        names.push(name);
    }
    for name in names {
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot make {name:?} private (0600)"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies the migrations this file has not seen yet, each in its own transaction.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let applied: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if applied > MIGRATIONS.len() {
        bail!(
            "the ledger has schema version {applied}, newer than this labcron ({}) understands",
            MIGRATIONS.len()
        );
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {} failed", index + 1))?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_3_ledger_keeps_its_runs_when_the_runs_table_is_rebuilt() {
        let mut conn = Connection::open_in_memory().unwrap();
        configure_connection(&conn).unwrap();
        // A ledger as main's labcron left it: schema, 0002 and 0004 (version 3).
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO users (login_name, created_at) VALUES ('u', 0);
             INSERT INTO jobs (name, type, repeat_schedule, timezone, start_date, activity_status,
                               created_by, timeout_seconds, max_queued_runs, created_at, updated_at)
             VALUES ('backup', 'INTERNAL', 'ONDEMAND', 'UTC', 0, 'Active', 2, 60, 10, 0, 0);
             INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at, task)
             VALUES (1, 'SUCCEEDED', 'MANUAL', 2, 5, 'database-backup'),
                    (1, 'QUEUED', 'SCHEDULED', 2, 6, NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, Option<String>, i64, i64, String)> = conn
            .prepare("SELECT id, task, attempt, series_end, run_trigger FROM runs ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, Some("database-backup".into()), 1, 1, "MANUAL".into()),
                (2, None, 1, 0, "SCHEDULED".into())
            ]
        );
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        // The new triggers are accepted now.
        conn.execute(
            "INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at) VALUES (1, 'QUEUED', 'RETRY', 2, 7)",
            [],
        )
        .unwrap();
    }
}
