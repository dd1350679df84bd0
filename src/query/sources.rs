//! Data sources of saved queries: named SQLite files from the settings (`[query_sources]`, with
//! `lab` defaulting to `<data dir>/lab.db`), and the only way this server opens them: read-only at
//! the file level (`SQLITE_OPEN_READ_ONLY`), `PRAGMA query_only`, an authorizer that refuses
//! ATTACH/DETACH, every kind of write and every pragma but a few that only describe the schema
//! (none that shows where a file lives), and a cap on the length of any one value
//! (`queries.value_byte_limit`, as SQLite's `SQLITE_LIMIT_LENGTH`). Also the check a saved
//! query's SQL must pass: one read-only statement that returns rows and compiles against its
//! source. Nothing here ever opens a data source for writing, and no message shows its path.
//! A source whose setting is a `postgres://` URL is a PostgreSQL database instead, read through
//! `postgres` (READ ONLY transactions); `check` and the callers pick the right kind by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{Batch, Connection, OpenFlags, Statement};

use super::postgres::{Failure, PasswordFrom, PgSource};
use super::sqlite_message;
use crate::config::Settings;
use crate::config::sources::is_postgres_url;

/// The configured data sources by name.
#[derive(Debug, Clone)]
pub struct DataSources {
    /// SQLite sources.
    paths: BTreeMap<String, PathBuf>,
    /// PostgreSQL sources.
    postgres: BTreeMap<String, PgSource>,
    /// Longest string or blob a connection may make or read, in bytes.
    value_limit: Option<u64>,
}

/// Why a saved query's SQL cannot be used on its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The source is not configured, cannot be opened or reached.
    Source(String),
    /// The SQL is not one read-only query that compiles there.
    Sql(String),
}

impl DataSources {
    /// The sources of `settings`, relative paths resolved against `data_dir`.
    pub fn from_settings(settings: &Settings, data_dir: &Path) -> Self {
        let value_limit = Some(settings.queries.value_byte_limit);
        let mut postgres = BTreeMap::new();
        for (name, value) in &settings.query_sources {
            if let Some(url) = value.to_str().filter(|v| is_postgres_url(v)) {
                let from = PasswordFrom {
                    value: settings.query_source_passwords.get(name).cloned(),
                    file: settings
                        .query_source_password_files
                        .get(name)
                        .map(|p| data_dir.join(p)),
                };
                postgres.insert(name.clone(), PgSource::new(name, url, &from, value_limit));
            }
        }
        DataSources {
            paths: settings.query_source_paths(data_dir),
            postgres,
            value_limit,
        }
    }

    /// Sources without a value cap beyond SQLite's own.
    pub fn from_paths(paths: BTreeMap<String, PathBuf>) -> Self {
        DataSources {
            paths,
            postgres: BTreeMap::new(),
            value_limit: None,
        }
    }

    /// The file of SQLite source `name`.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.paths.get(name).map(PathBuf::as_path)
    }

    /// PostgreSQL source `name`.
    pub fn postgres(&self, name: &str) -> Option<&PgSource> {
        self.postgres.get(name)
    }

    /// Whether a source of either kind is called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.paths.contains_key(name) || self.postgres.contains_key(name)
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .paths
            .keys()
            .chain(self.postgres.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// Checks `sql` against source `name` of either kind (blocking: it may connect to a server).
    /// Returns the names of its parameters.
    pub fn check(&self, name: &str, sql: &str) -> Result<Vec<String>, CheckError> {
        if let Some(source) = self.postgres(name) {
            return source.check_sql(sql).map_err(|e| match e {
                Failure::Sql(m) | Failure::Query(m) => CheckError::Sql(m),
                other => CheckError::Source(other.to_string()),
            });
        }
        let conn = self.open(name).map_err(CheckError::Source)?;
        check_sql(&conn, sql).map_err(CheckError::Sql)
    }

    /// The file of SQLite source `name`, checked to exist; the message says what is wrong
    /// without the file's path (users see it; the server's log gets the path).
    pub fn sqlite_file(&self, name: &str) -> Result<PathBuf, String> {
        if self.postgres.contains_key(name) {
            return Err(format!(
                "data source `{name}` is a PostgreSQL database, not a SQLite file"
            ));
        }
        let path = self.path(name).ok_or_else(|| {
            format!(
                "data source `{name}` is not configured (configured: {})",
                self.names().join(", ")
            )
        })?;
        // Users see these messages (run messages, saved-query errors): the server's paths stay
        // in the server's log, for the admin.
        if !path.is_file() {
            tracing::warn!(source = name, path = %path.display(), "a data source's file does not exist");
            return Err(format!(
                "data source `{name}`: its file does not exist (the server's log names it)"
            ));
        }
        Ok(path.to_path_buf())
    }

    /// Longest string or blob a connection may make or read, in bytes.
    pub fn value_limit(&self) -> Option<u64> {
        self.value_limit
    }

    /// Opens source `name` read-only, values capped.
    pub fn open(&self, name: &str) -> Result<Connection, String> {
        let path = self.sqlite_file(name)?;
        open_capped(name, &path, self.value_limit)
    }
}

/// Opens the file of source `name` read-only with values capped at `value_limit` bytes; the
/// message names the source, not the file (the server's log gets the path).
pub fn open_capped(
    name: &str,
    path: &Path,
    value_limit: Option<u64>,
) -> Result<Connection, String> {
    let conn = open_read_only(path).map_err(|e| {
        tracing::warn!(source = name, path = %path.display(), error = %e, "cannot open a data source");
        format!("data source `{name}`: cannot open its file: {}", sqlite_message(&e))
    })?;
    if let Some(limit) = value_limit {
        // SQLite then refuses (SQLITE_TOOBIG) to make or read any longer value, before
        // allocating it: a `zeroblob(1e9)` costs nothing.
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, limit)
            .map_err(|e| format!("data source `{name}`: {}", sqlite_message(&e)))?;
    }
    Ok(conn)
}

/// Opens a SQLite file so that nothing done through the connection can change it.
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", true)?;
    // Temporary tables, sorts and materialized subqueries stay in memory, never in temp files:
    // the query process's memory limit then bounds them all, and no query can fill a disk.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.authorizer(Some(read_only_authorizer))?;
    Ok(conn)
}

/// Refuses whatever could write, reach another file or show where a file lives; allows reading,
/// plain functions and the pragmas listed below. Table-valued pragma functions
/// (`SELECT * FROM pragma_database_list`) come here as the pragma they run, so they get the same
/// answer as the `PRAGMA` statement.
fn read_only_authorizer(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        AuthAction::Select
        | AuthAction::Read { .. }
        | AuthAction::Function { .. }
        | AuthAction::Recursive => Authorization::Allow,
        // `PRAGMA table_info(t)` arrives with `t` as its value; `PRAGMA x = y` sets, and is
        // refused unless x only ever reports.
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            let allowed = SCHEMA_PRAGMAS.contains(&name.as_str())
                || (pragma_value.is_none() && STATUS_PRAGMAS.contains(&name.as_str()));
            if allowed {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        _ => Authorization::Deny,
    }
}

/// Pragmas that describe the schema, with or without an argument (a table or index name).
const SCHEMA_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Pragmas that report a value when given none (and would set it when given one). Deliberately
/// absent: `database_list` (shows each file's path), `temp_store_directory` and
/// `data_store_directory` (paths on the server), and everything that changes state.
const STATUS_PRAGMAS: &[&str] = &[
    "application_id",
    "user_version",
    "schema_version",
    "data_version",
    "encoding",
    "page_size",
    "page_count",
    "freelist_count",
    "foreign_keys",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
];

const READ_ONLY_ONLY: &str = "only read-only statements (SELECT, WITH … SELECT, VALUES) are allowed; this one would change the database or reach another file";

/// Compiles `sql`, which must hold exactly one statement (comments and a final `;` are fine).
pub fn prepare_single<'c>(conn: &'c Connection, sql: &str) -> Result<Statement<'c>, String> {
    let message = |e: rusqlite::Error| {
        // The authorizer refuses writes while a statement is compiled.
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::AuthorizationForStatementDenied) {
            READ_ONLY_ONLY.to_string()
        } else {
            sqlite_message(&e)
        }
    };
    let mut batch = Batch::new(conn, sql);
    let first = batch
        .next()
        .map_err(message)?
        .ok_or_else(|| "the SQL holds no statement".to_string())?;
    match batch.next() {
        Ok(None) => Ok(first),
        _ => Err(sqlite_message(&rusqlite::Error::MultipleStatement)),
    }
}

/// Checks that `sql` is one read-only statement that returns rows and compiles against `conn`,
/// with named parameters only. Returns the parameter names (without their `:`, `@` or `$`).
pub fn check_sql(conn: &Connection, sql: &str) -> Result<Vec<String>, String> {
    let stmt = prepare_single(conn, sql)?;
    if !stmt.readonly() {
        return Err(READ_ONLY_ONLY.to_string());
    }
    if stmt.column_count() == 0 {
        return Err("the statement returns no columns; write a SELECT".to_string());
    }
    let mut names = Vec::new();
    for index in 1..=stmt.parameter_count() {
        match stmt.parameter_name(index) {
            Some(name) if !name.starts_with('?') => {
                let bare = super::params::bare_name(name).to_string();
                if !names.contains(&bare) {
                    names.push(bare);
                }
            }
            _ => {
                return Err(
                    "positional parameters (`?`) cannot be filled; use named ones such as :from"
                        .to_string(),
                );
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_db(dir: &Path) -> PathBuf {
        let path = dir.join("s.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO t (name) VALUES ('a'), ('b');",
        )
        .unwrap();
        path
    }

    fn file_bytes(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn nothing_written_through_a_read_only_connection_reaches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample_db(dir.path());
        // Fold the WAL into the file so the comparison covers everything.
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let before = file_bytes(&path);
        let conn = open_read_only(&path).unwrap();
        for sql in [
            "DELETE FROM t",
            "UPDATE t SET name = 'x'",
            "INSERT INTO t (name) VALUES ('c')",
            "DROP TABLE t",
            "CREATE TABLE u (x)",
            "CREATE TEMP TABLE u (x)",
            "PRAGMA query_only = OFF",
            "PRAGMA user_version = 7",
            "ATTACH DATABASE ':memory:' AS other",
            "VACUUM",
        ] {
            assert!(conn.execute_batch(sql).is_err(), "`{sql}` was allowed");
        }
        let count: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
        drop(conn);
        assert_eq!(file_bytes(&path), before);
    }

    #[test]
    fn reading_pragmas_and_functions_work() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_read_only(&sample_db(dir.path())).unwrap();
        let columns: i64 = conn
            .query_row("SELECT count(*) FROM pragma_table_info('t')", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(columns, 2);
        let text: String = conn
            .query_row(
                "SELECT upper(name) || date('2024-01-31', '+1 day') FROM t WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(text, "A2024-02-01");
    }

    #[test]
    fn no_pragma_shows_a_path_or_sets_anything() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_read_only(&sample_db(dir.path())).unwrap();
        for sql in [
            "SELECT * FROM pragma_database_list",
            "SELECT file FROM pragma_database_list()",
            "PRAGMA database_list",
            "PRAGMA main.database_list",
            "SELECT * FROM pragma_temp_store_directory",
            "PRAGMA temp_store_directory",
            "SELECT * FROM pragma_data_store_directory",
            "PRAGMA user_version = 3",
            "PRAGMA wal_checkpoint",
            "PRAGMA shrink_memory",
            "PRAGMA optimize",
        ] {
            let outcome = conn
                .prepare(sql)
                .and_then(|mut stmt| stmt.query([])?.next().map(|row| row.is_some()));
            assert!(outcome.is_err(), "`{sql}` was allowed");
        }
        for sql in [
            "PRAGMA user_version",
            "SELECT * FROM pragma_table_list",
            "PRAGMA index_list('t')",
            "SELECT count(*) FROM pragma_function_list",
            "PRAGMA quick_check",
        ] {
            assert!(
                conn.prepare(sql)
                    .and_then(|mut s| s.query([])?.next().map(|_| ()))
                    .is_ok(),
                "`{sql}` was refused"
            );
        }
    }

    #[test]
    fn values_over_the_cap_are_refused_and_messages_hide_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = BTreeMap::new();
        paths.insert("s".to_string(), sample_db(dir.path()));
        paths.insert("gone".to_string(), dir.path().join("secret-name.db"));
        let sources = DataSources {
            paths,
            postgres: BTreeMap::new(),
            value_limit: Some(1000),
        };
        let conn = sources.open("s").unwrap();
        let err = conn
            .query_row("SELECT zeroblob(1001)", [], |r| r.get::<_, Vec<u8>>(0))
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::TooBig),
            "{err}"
        );
        let blob: Vec<u8> = conn
            .query_row("SELECT zeroblob(1000)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(blob.len(), 1000);
        let err = sources.open("gone").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!err.contains("secret-name"), "{err}");
    }

    #[test]
    fn sql_checks() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_read_only(&sample_db(dir.path())).unwrap();
        assert_eq!(
            check_sql(
                &conn,
                "SELECT * FROM t WHERE id > :from AND name <> @name OR id = :from"
            )
            .unwrap(),
            vec!["from", "name"]
        );
        assert!(check_sql(&conn, "WITH x AS (SELECT 1) SELECT * FROM x;  -- done").is_ok());
        assert!(check_sql(&conn, "VALUES (1, 2)").is_ok());
        let err = check_sql(&conn, "SELEC 1").unwrap_err();
        assert!(err.contains("syntax error"), "{err}");
        let err = check_sql(&conn, "SELECT nope FROM t").unwrap_err();
        assert!(err.contains("no such column: nope"), "{err}");
        assert!(
            check_sql(&conn, "DELETE FROM t")
                .unwrap_err()
                .contains("read-only")
        );
        assert!(
            check_sql(&conn, "WITH x AS (SELECT 1) DELETE FROM t")
                .unwrap_err()
                .contains("read-only")
        );
        assert!(
            check_sql(&conn, "SELECT 1; DELETE FROM t")
                .unwrap_err()
                .contains("one statement")
        );
        assert!(
            check_sql(&conn, "SELECT 1; SELECT 2")
                .unwrap_err()
                .contains("one statement")
        );
        assert!(
            check_sql(&conn, "-- nothing")
                .unwrap_err()
                .contains("no statement")
        );
        assert!(
            check_sql(&conn, "SELECT * FROM t WHERE id = ?")
                .unwrap_err()
                .contains("positional")
        );
        assert!(check_sql(&conn, "ATTACH ':memory:' AS m").is_err());
        assert!(check_sql(&conn, "BEGIN").is_err());
    }

    #[test]
    fn missing_and_unknown_sources_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = BTreeMap::new();
        paths.insert("lab".to_string(), dir.path().join("absent.db"));
        let sources = DataSources::from_paths(paths);
        assert!(sources.open("lab").unwrap_err().contains("does not exist"));
        assert!(
            sources
                .open("other")
                .unwrap_err()
                .contains("not configured")
        );
    }
}
