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
    static URLS: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let key = absolute(data_dir);
    let mut urls = URLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let url = urls
        .entry(key)
        .or_insert_with(|| super::postgres::server().create_database("").url());
    Some(url.clone())
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
