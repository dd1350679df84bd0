//! The `labcron` command line besides `serve`: user administration, backups and restores, jobs as TOML
//! files, and the health check used by Docker. Each works on the data directory of the settings
//! (the ledger is shared safely with a running server: WAL mode, short write transactions).

pub mod backup;
pub mod healthcheck;
pub mod jobs_file;
pub mod users;

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::config::ledger::LedgerLocation;
use crate::error::ServiceError;
use crate::store::Db;

/// Opens the ledger of `settings`: the PostgreSQL database of `database_url`, else the SQLite
/// file in the data directory, which must exist (the server creates it on first start). Opening
/// brings the schema up to date (a ledger last opened by an older labcron).
pub fn open_ledger(settings: &Settings) -> anyhow::Result<Db> {
    let location = settings.ledger_location(&settings.data_dir);
    if let LedgerLocation::Sqlite(path) = &location
        && !path.exists()
    {
        bail!(
            "no ledger at {} (start the server once, or set data_dir)",
            path.display()
        );
    }
    Ok(Db::open_location(&location)?)
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

/// A rule's refusal as a command-line message: `CODE: message` for each item.
pub(crate) fn service_error(e: impl Into<ServiceError>) -> anyhow::Error {
    match e.into() {
        ServiceError::User(items) => {
            let text: Vec<String> = items
                .iter()
                .map(|i| format!("{}: {}", i.code, i.message))
                .collect();
            anyhow::anyhow!("{}", text.join("; "))
        }
        other => anyhow::anyhow!("{other}"),
    }
}
