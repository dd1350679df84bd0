//! Where the ledger lives and which node this server is: `database_url` (absent → SQLite in the
//! data directory, `postgres://` → a PostgreSQL database several nodes share), `node_name`
//! (default: the host name) and `node_timeout_seconds`. The URL is checked here without ever being
//! repeated, since it may hold a password; messages show it without one.

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::sources;

/// Where the ledger of a configuration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// `<data dir>/labcron.db`.
    Sqlite(PathBuf),
    /// A PostgreSQL database; the URL may hold a password (show `pg_connect::shown_url` instead).
    Postgres(String),
}

/// The ledger file's name in the data directory.
pub const LEDGER_FILE: &str = "labcron.db";

/// Most characters of a node name.
const NODE_NAME_MAX: usize = 64;

/// The default node name: the host name, or `labcron` when it cannot be read. Characters a node
/// name may not hold become `-`, so the default is always valid.
pub fn default_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(gethostname)
        .unwrap_or_default();
    let name: String = raw
        .chars()
        .map(|c| if node_name_char(c) { c } else { '-' })
        .take(NODE_NAME_MAX)
        .collect();
    if name.is_empty() {
        "labcron".into()
    } else {
        name
    }
}

fn gethostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

fn node_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a node name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_node_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.chars().count() > NODE_NAME_MAX || !name.chars().all(node_name_char)
    {
        bail!(
            "setting `node_name`: `{name}` is not a node name (1 to {NODE_NAME_MAX} letters, \
             digits, `.`, `_` or `-`)"
        );
    }
    Ok(())
}

/// Checks `node_timeout_seconds`.
pub fn validate_node_timeout(seconds: u64) -> anyhow::Result<()> {
    if !(5..=3600).contains(&seconds) {
        bail!("setting `node_timeout_seconds` must be from 5 to 3600");
    }
    Ok(())
}

/// Checks `database_url` (absent or empty: SQLite), never repeating it.
pub fn validate_database_url(url: Option<&str>) -> anyhow::Result<()> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(());
    };
    if !sources::is_postgres_url(url) {
        bail!(
            "setting `database_url` (LABCRON_DATABASE_URL / --database-url): not a PostgreSQL URL \
             (postgres://user:password@host:5432/database); leave it unset for SQLite in the data \
             directory"
        );
    }
    // Built whole (the CA file read), so a TLS word or file that cannot be used stops the start.
    if let Err(e) = crate::pg_connect::PgTarget::open(url) {
        bail!("setting `database_url`: not a usable PostgreSQL URL: {e}");
    }
    Ok(())
}

/// Where the ledger is for `database_url` and the data directory `data_dir`.
pub fn location(database_url: Option<&str>, data_dir: &Path) -> LedgerLocation {
    match database_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => LedgerLocation::Postgres(url.to_string()),
        None => LedgerLocation::Sqlite(data_dir.join(LEDGER_FILE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_checked_and_the_default_is_always_valid() {
        for good in ["a", "lab-node-1", "db.lab_2", &"x".repeat(64)] {
            validate_node_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "has space", "ü", "a/b", &"x".repeat(65)] {
            let error = validate_node_name(bad).expect_err(bad).to_string();
            assert!(error.contains("setting `node_name`"), "{error}");
        }
        let default = default_node_name();
        validate_node_name(&default).unwrap();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        if validate_node_name(host.trim()).is_ok() {
            assert_eq!(default, host.trim(), "the default is the host name");
        }
    }

    #[test]
    fn node_timeouts_are_from_5_to_3600() {
        assert!(validate_node_timeout(4).is_err());
        assert!(validate_node_timeout(5).is_ok());
        assert!(validate_node_timeout(3600).is_ok());
        let error = validate_node_timeout(3601).unwrap_err().to_string();
        assert!(error.contains("node_timeout_seconds"), "{error}");
    }

    #[test]
    fn database_urls_choose_the_engine_and_errors_never_show_the_password() {
        let data = Path::new("/srv/labcron");
        assert_eq!(
            location(None, data),
            LedgerLocation::Sqlite(data.join("labcron.db"))
        );
        assert_eq!(
            location(Some(" "), data),
            LedgerLocation::Sqlite(data.join("labcron.db"))
        );
        for url in [
            "postgres://labcron:s3cret@db.lab:5432/labcron",
            "postgresql://labcron:s3cret@db.lab/labcron",
        ] {
            validate_database_url(Some(url)).unwrap();
            assert_eq!(
                location(Some(url), data),
                LedgerLocation::Postgres(url.into())
            );
            let shown = crate::pg_connect::shown_url(url);
            assert!(shown.starts_with("postgres://labcron@db.lab"), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        for bad in [
            "mysql://labcron:s3cret@db.lab/labcron",
            "/srv/labcron/labcron.db",
            "postgres://s3cret@/",
            "postgres://labcron:s3cret@db.lab/labcron?sslmode=verify-fulll",
            "postgres://labcron:s3cret@db.lab/labcron?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
        ] {
            let error = validate_database_url(Some(bad)).expect_err(bad).to_string();
            assert!(error.contains("setting `database_url`"), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
