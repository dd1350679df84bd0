//! The ledger, on either engine: one SQLite file (`<data dir>/labcron.db`, the default) or a
//! PostgreSQL database several nodes share (`database_url`). Every SQL statement of the server
//! lives under this module, behind one engine-neutral interface (`ledger`: `Db::read` and
//! `Db::write` hand their closure a `&dyn Ledger`; `sqlite` and `postgres` implement it); `Db`
//! also offers the engine's own operations (a backup, a change watch, memory used). On SQLite,
//! reads use a small r2d2 pool; all writes go through one writer connection in `BEGIN IMMEDIATE`
//! transactions, so writers never fail with SQLITE_BUSY against each other. Writes are durable on
//! power loss (`synchronous = FULL`) and share commits: a writer thread runs every write waiting
//! for it in one transaction, each in a savepoint of its own (a failing write is rolled back
//! alone), commits once, and only then answers them all (group commit). On PostgreSQL each read
//! and write is a transaction of its own on a pooled connection (`postgres::PgLedgerDb`). Blocking
//! work runs off the async threads; no connection is held across an `.await`.

pub mod cluster; // what a node of a cluster asks of Db: its identity, the firing lock
pub mod error; // store::Error: how a ledger operation fails (a full disk told apart)
pub mod files; // run files kept in the ledger's database, in pieces (PostgreSQL)
pub mod guard; // one server per data directory; a replaced ledger file is noticed
pub mod ledger; // the engine-neutral interface: one trait per area, `Ledger` all of them
pub mod migrate_to_postgres; // `labcron migrate-ledger`: a SQLite ledger copied into PostgreSQL
pub mod postgres; // the PostgreSQL implementation, for several nodes on one database
pub mod sqlite; // the SQLite implementation: every SQL statement of the ledger

// The types of the interface's signatures (filters, new rows, outcomes), at engine-neutral
// paths: the SQL beside which they are defined is reached only through `Ledger`.
pub mod api_tokens {
    pub use super::sqlite::api_tokens::ApiToken;
}
pub mod audit {
    pub use super::sqlite::audit::{Event, EventFilter, StoredEvent};
}
pub mod jobs {
    pub use super::sqlite::jobs::{CHAIN_FAILURE, CHAIN_SUCCESS, JobFilter};
}
pub mod runs {
    pub use super::sqlite::runs::{
        AllRunsFilter, Enqueued, FollowUpRun, IDEMPOTENCY_WINDOW_MS, NewRun, Outcome, RunFilter,
    };
}
pub mod sessions {
    pub use super::sqlite::sessions::Session;
}
pub mod users {
    pub use super::sqlite::users::NewUser;
}

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use error::Error;
pub use ledger::Ledger;
use sqlite::Sqlite;

/// Migrations in order; `PRAGMA user_version` records how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema.sql"),
    include_str!("../../migrations/0002_job_webhook_url.sql"),
    include_str!("../../migrations/0003_run_task.sql"),
    include_str!("../../migrations/0004_job_key.sql"),
    include_str!("../../migrations/0005_retries_chains.sql"),
    include_str!("../../migrations/0006_accounts.sql"),
    include_str!("../../migrations/0007_run_node.sql"),
    include_str!("../../migrations/0008_login_key.sql"),
];

/// The migration (its number) after whose SQL every user's login key is computed, in Rust.
const LOGIN_KEY_MIGRATION: usize = 8;

/// The SQLite schema version this labcron brings a ledger to (`PRAGMA user_version`): what
/// `labcron migrate-ledger` expects of the ledger it copies, which it opens read-only.
pub fn sqlite_schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Handle to the ledger; cheap to clone. Engine-neutral on the outside: its closures see a
/// `&dyn Ledger`.
#[derive(Clone)]
pub struct Db {
    engine: Engine,
}

/// The engine behind a `Db`.
#[derive(Clone)]
enum Engine {
    Sqlite(SqliteDb),
    Postgres(postgres::PgLedgerDb),
}

/// What a backup of a PostgreSQL ledger answers: the database is the operator's to copy.
pub const PG_BACKUP_REFUSAL: &str = "on PostgreSQL, back up the database with pg_dump (labcron \
     copies only a SQLite ledger)";

/// A SQLite ledger: a read pool, one writer connection and its group-commit queue.
#[derive(Clone)]
struct SqliteDb {
    /// The ledger file (a backup and the change watch open their own connections on it).
    path: Arc<PathBuf>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    writer: Arc<Mutex<Connection>>,
    /// Writes waiting for the writer thread (`group_commit`); it ends when every handle is gone.
    queue: mpsc::Sender<Job>,
}

/// Most writes that share one commit.
const MAX_BATCH: usize = 512;

/// Opens a connection that writes the ledger at `path`: the writer of `Db` (the server's and the
/// CLI's).
fn writer_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // synchronous = FULL: WAL with NORMAL keeps every commit across a process crash, but a power
    // loss or kernel panic may roll back the last ones, and an accepted run (answered 200) could
    // vanish. FULL syncs the WAL at every commit, before the answer. Its cost (one fsync, a few
    // ms) is shared: concurrent writes commit together (see `Db::write`).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Prepared statements kept per connection. The writer alone runs a few dozen distinct ones (a
/// run's acceptance, claim and end, with its follow-ups and audit); rusqlite's default of 16
/// would evict and parse them again.
const STATEMENT_CACHE: usize = 64;

/// Bytes SQLite holds from the allocator now, over all connections of the process (page caches,
/// statements, schemas).
fn sqlite_memory_used() -> u64 {
    // SAFETY: sqlite3_memory_used only reads SQLite's memory statistics (under its own mutex);
    // it has no preconditions and may be called from any thread at any time.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    u64::try_from(used).unwrap_or(0)
}

impl Db {
    /// Opens the ledger `location` names (creating it if needed) and brings its schema up to
    /// date: the one way the server and the CLI choose the engine. Blocking.
    pub fn open_location(location: &crate::config::ledger::LedgerLocation) -> Result<Db, Error> {
        match location {
            crate::config::ledger::LedgerLocation::Sqlite(path) => Db::open(path),
            crate::config::ledger::LedgerLocation::Postgres(url) => Db::open_postgres(url),
        }
    }

    /// Connects to the PostgreSQL ledger at `url` and brings its schema up to date. Blocking
    /// (see [`Db::write_sync`]).
    pub fn open_postgres(url: &str) -> Result<Db, Error> {
        let db = postgres::PgLedgerDb::open(url)?;
        Ok(Db {
            engine: Engine::Postgres(db),
        })
    }

    /// Whether the ledger is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// Where the ledger is, for messages: the SQLite file, or the URL without its password.
    pub fn describe(&self) -> String {
        match &self.engine {
            Engine::Sqlite(db) => db.path.display().to_string(),
            Engine::Postgres(db) => db.url().to_string(),
        }
    }

    /// Bytes the ledger's engine holds in this process (the `labcron_ledger_memory_bytes`
    /// gauge): SQLite's page caches, statements and schemas; 0 on PostgreSQL (its memory is the
    /// database server's).
    pub fn memory_used(&self) -> u64 {
        match &self.engine {
            Engine::Sqlite(_) => sqlite_memory_used(),
            Engine::Postgres(_) => 0,
        }
    }

    /// Opens (creating if needed) the SQLite ledger at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db, Error> {
        let mut writer = writer_connection(path).map_err(|e| Error::open(path, e))?;
        migrate(&mut writer).map_err(|e| Error::open(path, e))?;
        restrict_ledger_files(path)?;
        let manager = SqliteConnectionManager::file(path)
            // Readers are read-write connections told never to write, which keeps WAL
            // shared-memory handling ordinary.
            .with_init(|c| {
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c.execute_batch(
                    "PRAGMA busy_timeout = 5000; PRAGMA temp_store = MEMORY; PRAGMA query_only = ON;",
                )
            });
        let readers = r2d2::Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .build(manager)
            .map_err(|e| Error::open(path, format!("cannot open the read pool: {e}")))?;
        let writer = Arc::new(Mutex::new(writer));
        let (queue, waiting) = mpsc::channel();
        let connection = writer.clone();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || group_commit(&connection, &waiting))
            .map_err(|e| Error::open(path, format!("cannot start the writer thread: {e}")))?;
        Ok(Db {
            engine: Engine::Sqlite(SqliteDb {
                path: Arc::new(path.to_path_buf()),
                readers,
                writer,
                queue,
            }),
        })
    }

    /// The run files of this ledger when it keeps them (a database several nodes share);
    /// `None` when they live in the data directory (SQLite).
    pub fn files_in_ledger(&self) -> Option<files::DbFiles> {
        match &self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(db) => Some(files::DbFiles::new(db.clone())),
        }
    }

    /// The SQLite ledger, for SQLite's own operations; on PostgreSQL, why there is none.
    fn sqlite(&self) -> Result<&SqliteDb, Error> {
        match &self.engine {
            Engine::Sqlite(db) => Ok(db),
            Engine::Postgres(db) => Err(Error::Backup(format!(
                "the ledger is on PostgreSQL ({}), not a SQLite file",
                db.url()
            ))),
        }
    }

    /// Runs `f` with a read-only view of the ledger on the blocking pool.
    /// The error is the caller's own (`E`), which a store error converts into: a use case's
    /// closure may fail with its own reasons beside the store's.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&dyn Ledger) -> Result<T, E> + Send + 'static,
    {
        match &self.engine {
            Engine::Sqlite(_) => self.read_sqlite(move |conn| f(&Sqlite(conn))).await,
            Engine::Postgres(pg) => {
                let pg = pg.clone();
                tokio::task::spawn_blocking(move || pg.read(|l| f(l)))
                    .await
                    .map_err(Error::from)?
            }
        }
    }

    /// [`Db::read`] with SQLite's own connection (for the store's tests and engine operations).
    async fn read_sqlite<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let pool = self.sqlite()?.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get().map_err(Error::from)?;
            f(&conn)
        })
        .await
        .map_err(Error::from)?
    }

    /// Runs `f` inside a `BEGIN IMMEDIATE` transaction on the writer, which it may share with
    /// other writes (in a savepoint of its own); its changes are kept when it succeeds and rolled
    /// back when it fails. Answers once the transaction is committed and synced, so a success is
    /// durable. The write is queued when this is called, before the first poll.
    pub fn write<T, E, F>(&self, f: F) -> impl Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&dyn Ledger) -> Result<T, E> + Send + 'static,
    {
        use futures_util::future::Either;
        match &self.engine {
            Engine::Sqlite(_) => Either::Left(self.write_sqlite(move |tx| f(&Sqlite(tx)))),
            Engine::Postgres(pg) => {
                // Started now, like SQLite's queued write (a caller may start several writes
                // and await them later); PostgreSQL runs them at the same time.
                let pg = pg.clone();
                let work = move || pg.write(|l| f(l));
                let started = tokio::runtime::Handle::try_current()
                    .map(|runtime| runtime.spawn_blocking(work));
                Either::Right(async move {
                    match started {
                        Ok(task) => task.await.map_err(Error::from)?,
                        Err(_) => Err(Error::WriterStopped.into()),
                    }
                })
            }
        }
    }

    /// [`Db::write`] with SQLite's own transaction (for the store's tests).
    fn write_sqlite<T, E, F>(&self, f: F) -> impl Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&Transaction) -> Result<T, E> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |slot| {
            let tx = match slot {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = answer.send(Err(Error::from(copy_error(e)).into()));
                    return Pending::answered();
                }
            };
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(tx)))
                .unwrap_or_else(|_| Err(Error::WritePanicked.into()));
            Pending {
                succeeded: result.is_ok(),
                answer: Box::new(move |commit| {
                    let result = match (result, commit) {
                        (Ok(_), Some(e)) => Err(Error::from(copy_error(e)).into()),
                        (result, _) => result,
                    };
                    let _ = answer.send(result);
                }),
            }
        });
        let queued = self
            .sqlite()
            .map_err(|_| Error::WriterStopped)
            .and_then(|db| db.queue.send(job).map_err(|_| Error::WriterStopped));
        async move {
            queued?;
            answered.await.map_err(|_| Error::WriterStopped)?
        }
    }

    /// The blocking form of [`Db::write`], for code already on a blocking thread
    /// (`spawn_blocking`, `block_in_place`) or on a thread without a runtime. Never from an
    /// async thread: PostgreSQL's synchronous client runs a runtime of its own, which cannot
    /// start on one (it panics), and SQLite's would stall the thread's other tasks.
    pub fn write_sync<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<Error>,
        F: FnOnce(&dyn Ledger) -> Result<T, E>,
    {
        match &self.engine {
            Engine::Sqlite(db) => write_blocking(&db.writer, |tx| f(&Sqlite(tx))),
            Engine::Postgres(pg) => pg.write(|l| f(l)),
        }
    }

    /// The blocking form of [`Db::read`] (see [`Db::write_sync`]).
    pub fn read_sync<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<Error>,
        F: FnOnce(&dyn Ledger) -> Result<T, E>,
    {
        match &self.engine {
            Engine::Sqlite(db) => {
                let conn = db.readers.get().map_err(Error::from)?;
                f(&Sqlite(&conn))
            }
            Engine::Postgres(pg) => pg.read(|l| f(l)),
        }
    }

    /// Quick liveness check for `/health`.
    pub async fn ping(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(_) => self
                .read_sqlite(|c| {
                    Ok::<_, Error>(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
                })
                .await
                .is_ok(),
            Engine::Postgres(pg) => {
                let pg = pg.clone();
                tokio::task::spawn_blocking(move || pg.schema_version())
                    .await
                    .is_ok_and(|version| version.is_ok())
            }
        }
    }

    /// Writes a consistent, checked copy of the whole ledger to `target` (a new file), while
    /// the ledger stays in use: for `labcron backup`.
    /// On PostgreSQL it refuses ([`PG_BACKUP_REFUSAL`]): the database is copied with pg_dump.
    pub fn backup_to(&self, target: &Path) -> Result<(), Error> {
        if self.is_postgres() {
            return Err(Error::Backup(PG_BACKUP_REFUSAL.into()));
        }
        let path = &self.sqlite()?.path;
        sqlite::copy_checked(path, target, false).map_err(|reason| Error::open(path, reason))
    }

    /// Writes a consistent copy of the whole ledger to `target` (a new file) without writing to
    /// the ledger, for the database-backup task: `interrupt` is asked now and then and stops the
    /// copy (an error) when true. The copy passes a quick check; answers how many jobs and runs
    /// it holds. On PostgreSQL it refuses, as `backup_to` does.
    pub fn backup_for_task(
        &self,
        target: &Path,
        interrupt: ledger::Interrupt,
    ) -> Result<(i64, i64), Error> {
        if self.is_postgres() {
            return Err(Error::Backup(PG_BACKUP_REFUSAL.into()));
        }
        sqlite::copy_for_task(&self.sqlite()?.path, target, interrupt)
    }

    /// A watch on changes made to the ledger by anyone else (another process, another
    /// connection): see [`ChangeWatch::marker`].
    /// Blocking.
    pub fn change_watch(&self) -> Result<ChangeWatch, Error> {
        let db = match &self.engine {
            Engine::Sqlite(db) => db,
            Engine::Postgres(pg) => {
                return Ok(ChangeWatch {
                    engine: WatchEngine::Postgres(pg.clone()),
                });
            }
        };
        let path = &db.path;
        let conn =
            Connection::open_with_flags(path.as_path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| Error::open(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(ChangeWatch {
            engine: WatchEngine::Sqlite(Mutex::new(conn)),
        })
    }
}

/// Notices commits to the ledger made since the last look by any connection but its own.
pub struct ChangeWatch {
    engine: WatchEngine,
}

enum WatchEngine {
    /// SQLite's `PRAGMA data_version` is per connection: this one, kept for the watch's life.
    Sqlite(Mutex<Connection>),
    /// PostgreSQL's counter of changes to `jobs` (bumped by a trigger in the same transaction
    /// as the change), read on the pool.
    Postgres(postgres::PgLedgerDb),
}

impl ChangeWatch {
    /// A number that differs from the one the previous call returned when anyone (this server's
    /// writer or another process or node) has committed a change in between, and is equal
    /// otherwise. On SQLite any commit to the ledger counts; on PostgreSQL a change to `jobs`.
    /// Blocking.
    pub fn marker(&self) -> Result<i64, Error> {
        match &self.engine {
            WatchEngine::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
            }
            WatchEngine::Postgres(pg) => pg.jobs_changes(),
        }
    }

    /// Runs `f` on the watch's own connection (to read what changed). Blocking.
    pub fn read<T>(&self, f: impl FnOnce(&dyn Ledger) -> Result<T, Error>) -> Result<T, Error> {
        match &self.engine {
            WatchEngine::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                f(&Sqlite(&conn))
            }
            WatchEngine::Postgres(pg) => pg.read(|l| f(l)),
        }
    }
}

/// Whether the ledger file at `path` is sound (`PRAGMA integrity_check`), before it is opened
/// (a restored ledger); the check's complaint when it is not.
pub fn check_ledger_file(path: &Path) -> Result<(), Error> {
    match sqlite::integrity_of(path) {
        Ok(answer) if answer == "ok" => Ok(()),
        Ok(answer) => Err(Error::open(
            path,
            format!("failed its integrity check: {answer}"),
        )),
        Err(reason) => Err(Error::open(path, reason)),
    }
}

/// A consistent, checked copy of the SQLite database file `source` (a data source) at `target`.
pub fn copy_sqlite_file(source: &Path, target: &Path) -> Result<(), Error> {
    sqlite::copy_checked(source, target, true).map_err(|reason| Error::open(source, reason))
}

/// A write waiting for the writer thread. Given the transaction, it runs and says how it went;
/// given an error (no transaction could be opened), it answers with it at once.
type Job = Box<dyn FnOnce(Result<&Transaction<'_>, &rusqlite::Error>) -> Pending + Send>;

/// Answers a caller: its own result, or the commit's error when it succeeded but the commit
/// failed.
type Answer = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;

/// A write that has run and waits for the commit to be answered.
struct Pending {
    succeeded: bool,
    answer: Answer,
}

impl Pending {
    fn answered() -> Pending {
        Pending {
            succeeded: false,
            answer: Box::new(|_| {}),
        }
    }
}

/// The same error again (rusqlite's errors are not `Clone`), for each write of a failed batch.
fn copy_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// The writer thread: takes every write waiting (up to `MAX_BATCH`), runs them in one transaction
/// and commits once. While one batch syncs, the next gathers, so the commits per second stay
/// within what the disk can sync, however many writes there are.
fn group_commit(writer: &Mutex<Connection>, waiting: &mpsc::Receiver<Job>) {
    while let Ok(first) = waiting.recv() {
        let mut batch = VecDeque::from([first]);
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(job) => batch.push_back(job),
                Err(_) => break,
            }
        }
        let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
        run_batch(&mut conn, batch);
    }
}

fn run_batch(conn: &mut Connection, mut batch: VecDeque<Job>) {
    while !batch.is_empty() {
        // Stamps for `crate::timeline` (when it is on).
        let timed = crate::timeline::enabled();
        let began = if timed { crate::timeline::now_ns() } else { 0 };
        let writes = batch.len();
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                for job in batch.drain(..) {
                    (job(Err(&e)).answer)(None);
                }
                return;
            }
        };
        let mut done: Vec<Pending> = Vec::new();
        let mut lost = None;
        while let Some(job) = batch.pop_front() {
            if let Err(e) = run_cached(&tx, "SAVEPOINT write") {
                (job(Err(&e)).answer)(None);
                continue;
            }
            let pending = job(Ok(&tx));
            let closed = if pending.succeeded {
                run_cached(&tx, "RELEASE write")
            } else {
                run_cached(&tx, "ROLLBACK TO write").and_then(|()| run_cached(&tx, "RELEASE write"))
            };
            if tx.is_autocommit() {
                // SQLite rolled the whole transaction back (it may, on a full disk): the writes
                // before this one are gone too. Tell them; the rest get a new transaction.
                let e = closed.err().unwrap_or_else(|| {
                    rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("the ledger transaction was rolled back".into()),
                    )
                });
                done.push(pending);
                lost = Some(e);
                break;
            }
            match closed {
                Ok(()) if pending.succeeded => done.push(pending),
                Ok(()) => (pending.answer)(None),
                Err(e) => (pending.answer)(Some(&e)),
            }
        }
        let commit_at = if timed { crate::timeline::now_ns() } else { 0 };
        let committed = match lost {
            Some(e) => Err(e),
            None => tx.commit(),
        };
        if timed {
            crate::timeline::line(format_args!(
                "B {} {began} {commit_at} {}",
                writes - batch.len(),
                crate::timeline::now_ns()
            ));
        }
        let error = committed.err();
        for pending in done {
            (pending.answer)(error.as_ref());
        }
    }
}

/// Runs a statement without parameters or rows through the statement cache (a savepoint's,
/// twice per write: `execute_batch` would parse it each time).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn write_blocking<T, E, F>(writer: &Mutex<Connection>, f: F) -> Result<T, E>
where
    E: From<Error>,
    F: FnOnce(&Transaction) -> Result<T, E>,
{
    // A panic while holding the lock leaves the connection usable (the transaction rolled back
    // on drop), so a poisoned mutex is recovered rather than propagated.
    let mut conn = writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(Error::from)?;
    let value = f(&tx)?;
    tx.commit().map_err(Error::from)?;
    Ok(value)
}

/// Makes the ledger and its `-wal`/`-shm` companions private to the server's user (0600): they
/// hold password and token hashes. Ledgers made by older versions (0644) are tightened here too.
fn restrict_ledger_files(path: &Path) -> Result<(), Error> {
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
                return Err(Error::open(
                    path,
                    format!("cannot make {name:?} private (0600): {e}"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies the migrations this file has not seen yet, each in its own transaction.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let applied: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(|e| e.to_string())? as usize;
    if applied > MIGRATIONS.len() {
        return Err(format!(
            "the ledger has schema version {applied}, newer than this labcron ({}) understands",
            MIGRATIONS.len()
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let failed = |e: rusqlite::Error| format!("migration {} failed: {e}", index + 1);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        if index + 1 == LOGIN_KEY_MIGRATION {
            let left_without = sqlite::users::fill_login_keys(&tx)
                .map_err(|e| format!("migration {} failed: {e}", index + 1))?;
            for (id, login_name) in left_without {
                tracing::warn!(
                    user_id = id,
                    login_name = %login_name,
                    "this user's login name is another's under Unicode case folding: it cannot sign in until an admin renames it"
                );
            }
        }
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A caller's own error beside the store's, as a use case has.
    #[derive(Debug)]
    #[allow(dead_code)] // read by the assertions' Debug output
    enum Refusal {
        Store(Error),
        Refused,
    }

    impl From<Error> for Refusal {
        fn from(e: Error) -> Self {
            Refusal::Store(e)
        }
    }

    #[test]
    fn migration_8_keys_every_user_and_survives_names_that_fold_together() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..LOGIN_KEY_MIGRATION - 1] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", (LOGIN_KEY_MIGRATION - 1) as i64)
            .unwrap();
        // Two accounts SQLite's NOCASE told apart (it folds ASCII only), and an ordinary one.
        conn.execute_batch(
            "INSERT INTO users (login_name, created_at) VALUES ('Émile', 0), ('émile', 0), ('Bob', 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let keys: Vec<(String, Option<String>)> = conn
            .prepare("SELECT login_name, login_key FROM users ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            keys,
            [
                ("$system".to_string(), Some("$system".to_string())),
                ("Émile".to_string(), Some("émile".to_string())),
                ("émile".to_string(), None),
                ("Bob".to_string(), Some("bob".to_string())),
            ]
        );
        // The older account signs in by any spelling; the newer one waits for a new name.
        let found = sqlite::users::get_with_hash(&conn, "ÉMILE")
            .unwrap()
            .unwrap();
        assert_eq!(found.0.login_name, "Émile");
    }

    fn synchronous(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn every_writer_connection_syncs_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labcron.db");
        let db = Db::open(&path).unwrap();
        // 2 is FULL (NORMAL is 1).
        let group = db
            .write_sqlite(|tx| Ok::<_, Error>(synchronous(tx)))
            .await
            .unwrap();
        assert_eq!(group, 2, "the group-commit writer");
        let single = write_blocking(&db.sqlite().unwrap().writer, |tx| {
            Ok::<_, Error>(synchronous(tx))
        })
        .unwrap();
        assert_eq!(single, 2, "the blocking writer");
        let cli = writer_connection(&path).unwrap();
        assert_eq!(synchronous(&cli), 2, "the CLI's writer");
        let mode: String = cli
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("labcron.db")).unwrap();
        db.write_sqlite(|tx| Ok::<_, Error>(tx.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .await
            .unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        {
            let counter = commits.clone();
            db.sqlite()
                .unwrap()
                .writer
                .lock()
                .unwrap()
                .commit_hook(Some(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    false
                }))
                .unwrap();
        }
        // With the writer held, 100 writes queue up; then they run in (at most) two batches.
        let held = db.sqlite().unwrap().writer.lock().unwrap();
        let writes: Vec<_> = (0..100i64)
            .map(|x| {
                db.write_sqlite(move |tx| {
                    tx.execute("INSERT INTO t (x) VALUES (?1)", [x])
                        .map_err(Error::from)?;
                    match x % 10 {
                        3 => Err(Refusal::Refused),
                        7 => panic!("a write that panics after writing"),
                        _ => Ok(x),
                    }
                })
            })
            .collect();
        drop(held);
        let results = futures_util::future::join_all(writes).await;
        for (x, result) in results.iter().enumerate() {
            assert_eq!(
                result.is_ok(),
                !matches!(x % 10, 3 | 7),
                "write {x}: {result:?}"
            );
        }
        let kept: Vec<i64> = db
            .read_sqlite(|c| -> Result<_, Error> {
                let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<i64>, _>>()?)
            })
            .await
            .unwrap();
        let expected: Vec<i64> = (0..100).filter(|x| !matches!(x % 10, 3 | 7)).collect();
        assert_eq!(kept, expected, "failed writes are rolled back alone");
        let commits = commits.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&commits),
            "100 writes took {commits} commits"
        );
    }

    #[test]
    fn a_version_3_ledger_keeps_its_runs_when_the_runs_table_is_rebuilt() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        // A ledger of version 3 (schema, 0002 and 0003), from before the job keys and retries.
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

    #[test]
    fn version_7_allows_one_run_in_progress_per_job_and_ends_the_extra_ones_of_an_old_ledger() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        for sql in &MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        conn.execute_batch(
            "INSERT INTO users (login_name, created_at) VALUES ('u', 0);
             INSERT INTO jobs (name, type, repeat_schedule, timezone, start_date, activity_status,
                               created_by, timeout_seconds, max_queued_runs, created_at, updated_at)
             VALUES ('a', 'EXTERNAL', 'ONDEMAND', 'UTC', 0, 'Active', 2, 60, 10, 0, 0),
                    ('b', 'EXTERNAL', 'ONDEMAND', 'UTC', 0, 'Active', 2, 60, 10, 0, 0);
             INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at)
             VALUES (1, 'IN_PROGRESS', 'MANUAL', 2, 5), (1, 'IN_PROGRESS', 'MANUAL', 2, 6),
                    (2, 'IN_PROGRESS', 'MANUAL', 2, 7);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, String, Option<String>)> = conn
            .prepare("SELECT id, status, node FROM runs ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "IN_PROGRESS".into(), None),
                (2, "FAILED".into(), None),
                (3, "IN_PROGRESS".into(), None)
            ]
        );
        // The index refuses a second run of a job in progress, as PostgreSQL's does.
        let second = conn
            .execute(
                "INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at, node)
                 VALUES (2, 'IN_PROGRESS', 'MANUAL', 2, 8, 'n')",
                [],
            )
            .map_err(Error::from)
            .unwrap_err();
        assert!(second.is_unique_violation(), "{second:?}");
        conn.execute(
            "INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at)
             VALUES (2, 'QUEUED', 'MANUAL', 2, 8)",
            [],
        )
        .unwrap();
    }

    #[test]
    fn the_saved_query_and_audit_lists_are_not_prepared_again_from_page_to_page() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = writer_connection(&dir.path().join("labcron.db")).unwrap();
        migrate(&mut conn).unwrap();
        let user: i64 = conn
            .query_row("SELECT id FROM users LIMIT 1", [], |r| r.get(0))
            .unwrap();
        for n in 0..30 {
            conn.execute(
                "INSERT INTO saved_queries (title, sql, data_source, created_by, last_modified_on)
                 VALUES (?1, 'SELECT 1', 'demo', ?2, 0)",
                rusqlite::params![format!("query {n}"), user],
            )
            .unwrap();
            sqlite::audit::record(&conn, &audit::Event::new("someone", "SIGN_IN", None), n)
                .unwrap();
        }
        let events = audit::EventFilter::default();
        // Pages of one size at different offsets, again and again, as clients page through.
        for start in [0, 10, 20, 0, 0] {
            assert_eq!(
                sqlite::queries::list(&conn, None, start, 10).unwrap().len(),
                10
            );
            assert_eq!(
                sqlite::audit::list(&conn, &events, start, 10)
                    .unwrap()
                    .len(),
                10
            );
        }
        for (name, sql) in [
            ("saved queries", sqlite::queries::list_query(10)),
            ("audit events", sqlite::audit::list_query(10)),
        ] {
            let stmt = conn.prepare_cached(&sql).unwrap();
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 5, "{name}");
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "the {name} list was prepared again"
            );
        }
    }
}
