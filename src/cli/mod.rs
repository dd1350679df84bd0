//! The `labcron` command line besides `serve`: user administration, online backups, jobs as TOML
//! files, and the health check used by Docker. Each works on the data directory of the settings
//! (the ledger is shared safely with a running server: WAL mode, short write transactions).

pub mod healthcheck;
pub mod jobs_file;
pub mod users;

use std::path::Path;

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::store::Db;

/// Opens the ledger of `settings` (it must exist: the server creates it on first start).
pub fn open_ledger(settings: &Settings) -> anyhow::Result<Db> {
    let path = settings.data_dir.join("labcron.db");
    if !path.exists() {
        bail!(
            "no ledger at {} (start the server once, or set data_dir)",
            path.display()
        );
    }
    Db::open(&path)
}

/// `labcron backup FILE`: a consistent online copy of the ledger (`VACUUM INTO`), openable by sqlite3.
pub fn backup(settings: &Settings, target: &Path) -> anyhow::Result<()> {
    if target.exists() {
        bail!("{} already exists; choose a new file", target.display());
    }
    open_ledger(settings)?;
    let target_text = target.to_str().context("the backup path is not UTF-8")?;
    // A connection of its own: VACUUM INTO cannot run inside a transaction or on a query-only
    // connection. It reads one consistent snapshot and writes only the new file.
    let source = rusqlite::Connection::open(settings.data_dir.join("labcron.db"))?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    source
        .execute("VACUUM INTO ?1", [target_text])
        .context("backup failed")?;
    let check = rusqlite::Connection::open(target)?;
    let integrity: String = check.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        bail!(
            "the backup at {} failed its integrity check: {integrity}",
            target.display()
        );
    }
    Ok(())
}

/// Reads a password from the `LABCRON_NEW_PASSWORD` variable or the first line of standard input.
pub fn read_new_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("LABCRON_NEW_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password given (set LABCRON_NEW_PASSWORD or pipe it on standard input)");
    }
    Ok(password)
}
