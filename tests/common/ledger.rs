//! Which engine the tests' servers keep their ledger on: `LABCRON_TEST_LEDGER` = `sqlite` (the
//! default) or `postgres`, for the whole test process. On PostgreSQL each data directory gets a
//! fresh database of the process's one private cluster (`postgres::server()`), created at its
//! first use and the same for every later start on that directory (a restart keeps its ledger).
//! `Launch`, the in-process `spawn_app*` and `command` (the CLI) pass it as `--database-url` /
//! `database_url`. A test that is inherently SQLite's (it opens `labcron.db` itself, or tests
//! the ledger file's guard or SQLite's backup) starts with `if sqlite_only("why") { return; }`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Whether this test process runs its servers on PostgreSQL.
pub fn on_postgres() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("LABCRON_TEST_LEDGER").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("LABCRON_TEST_LEDGER={other}: expected sqlite or postgres"),
    })
}

/// The engine's name, for messages.
pub fn engine_name() -> &'static str {
    if on_postgres() { "postgres" } else { "sqlite" }
}

/// True (after saying why on stderr) when the test must be skipped: it is about SQLite's own
/// ledger file and the tests run on PostgreSQL.
pub fn sqlite_only(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL (LABCRON_TEST_LEDGER=postgres): {why}");
        return true;
    }
    false
}

/// The database URL of the servers on `data_dir` (`None` on SQLite): a fresh database at the
/// first call for a directory, the same one after.
pub fn database_url_for(data_dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let mut urls = urls();
    let url = urls
        .entry(absolute(data_dir))
        .or_insert_with(|| super::postgres::server().create_database("").url());
    Some(url.clone())
}

/// The database URL of `data_dir` if a server (or an earlier call) has used it; `None` on SQLite
/// and for a directory no test has started a server on (the CLI then finds no ledger, as there).
pub fn known_database_url(data_dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    urls().get(&absolute(data_dir)).cloned()
}

/// `["--database-url", url]` for a CLI command on `data_dir` (see `known_database_url`), or none.
pub fn database_url_args(data_dir: &Path) -> Vec<String> {
    known_database_url(data_dir)
        .map(|url| vec!["--database-url".to_string(), url])
        .unwrap_or_default()
}

/// Records that the servers on `also` (the same directory by another name: the canonical path a
/// server reports) use `data_dir`'s database.
pub fn same_database(data_dir: &Path, also: &Path) {
    if let Some(url) = database_url_for(data_dir) {
        urls().insert(absolute(also), url);
    }
}

fn urls() -> std::sync::MutexGuard<'static, HashMap<PathBuf, String>> {
    static URLS: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    URLS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The ledger of a data directory through the store, on the tests' engine (a server may be
/// running on it). Blocking: call it from a plain test or `spawn_blocking`.
pub fn open_db(data_dir: &Path) -> labcron::store::Db {
    match database_url_for(data_dir) {
        Some(url) => labcron::store::Db::open_postgres(&url).expect("open the PostgreSQL ledger"),
        None => labcron::store::Db::open(&data_dir.join("labcron.db")).expect("open the ledger"),
    }
}

/// `data_dir` made absolute without touching the file system (it may not exist yet), so the same
/// directory named two ways is one key.
fn absolute(dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(dir))
            .unwrap_or_else(|_| dir.to_path_buf())
    }
}

/// Runs `sql` (no parameters: format values in) on the ledger of `data_dir`, on the tests'
/// engine, and answers every row's columns as text (NULL as `None`; PostgreSQL shows booleans as
/// `t`/`f`, SQLite's flags are `1`/`0`). For tests that check or set a row the API does not show.
/// Blocking: the PostgreSQL client runs on a thread of its own.
pub fn sql_rows(data_dir: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    match database_url_for(data_dir) {
        Some(url) => {
            let sql = sql.to_string();
            std::thread::spawn(move || {
                let mut client =
                    postgres::Client::connect(&url, postgres::NoTls).expect("connect the ledger");
                client
                    .simple_query(&sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .into_iter()
                    .filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_string))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()
            })
            .join()
            .expect("the ledger query's thread")
        }
        None => {
            let conn = super::data::ledger(data_dir);
            let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let columns = stmt.column_count();
            let mut out = Vec::new();
            let mut rows = stmt.query([]).expect("query");
            while let Some(row) = rows.next().expect("row") {
                out.push(
                    (0..columns)
                        .map(|i| match row.get_ref(i).expect("column") {
                            rusqlite::types::ValueRef::Null => None,
                            rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                            rusqlite::types::ValueRef::Real(x) => Some(x.to_string()),
                            rusqlite::types::ValueRef::Text(t)
                            | rusqlite::types::ValueRef::Blob(t) => {
                                Some(String::from_utf8_lossy(t).into_owned())
                            }
                        })
                        .collect(),
                );
            }
            out
        }
    }
}

/// The first column of the first row of `sql_rows` (panics when there is none or it is NULL).
pub fn sql_text(data_dir: &Path, sql: &str) -> String {
    sql_rows(data_dir, sql)
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .unwrap_or_else(|| panic!("{sql}: no value"))
}

/// `sql_text` as a number.
pub fn sql_i64(data_dir: &Path, sql: &str) -> i64 {
    let text = sql_text(data_dir, sql);
    text.parse()
        .unwrap_or_else(|_| panic!("{sql}: {text:?} is not a number"))
}
