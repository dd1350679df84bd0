//! A data directory's files as the tests touch them: executable scripts in a scripts directory,
//! and the ledger opened beside a running server (WAL allows it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes an executable script `name` into `scripts_dir` (created if missing).
pub fn try_write_script(scripts_dir: &Path, name: &str, body: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(scripts_dir)?;
    let path = scripts_dir.join(name);
    std::fs::write(&path, body)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// `try_write_script`, panicking on an error.
pub fn write_script(scripts_dir: &Path, name: &str, body: &str) -> PathBuf {
    try_write_script(scripts_dir, name, body).expect("write an executable script")
}

/// Opens the ledger of a data directory (the server may be running: WAL allows it).
pub fn ledger(data_dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(data_dir.join("labcron.db")).expect("open the ledger");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    conn
}

/// `PRAGMA integrity_check` of a data directory's ledger (`ok` when sound).
pub fn integrity_check(data_dir: &Path) -> String {
    ledger(data_dir)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}
