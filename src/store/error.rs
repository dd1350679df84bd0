//! `store::Error`: how a ledger operation fails, in the store's own terms. A full disk is its own
//! kind, recognised once here from SQLite's result code, so callers that wait for space (a run's
//! end) match a variant instead of digging into the cause. The store knows nothing of HTTP or of
//! the contract's error codes: `ServiceError` wraps this, and `web::error` maps that.

use std::path::PathBuf;

/// How many times a write that found the PostgreSQL ledger unreachable is tried again, a second
/// after each try (which itself waits up to the pool's 5 s for a connection): an hour at the very
/// least. A run's end and the copy-up of its files at that end both wait this long, so an outage
/// neither fails a finished run nor loses its files (they stay in its local directory meanwhile).
pub const UNREACHABLE_WAITS: u32 = 3600;

/// A ledger operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk holding the ledger (or the database itself) is full; the write was rolled back.
    #[error("the ledger's disk is full: {0}")]
    DiskFull(#[source] rusqlite::Error),
    /// Any other SQLite failure.
    #[error(transparent)]
    Sqlite(rusqlite::Error),
    /// No reader connection could be had from the pool.
    #[error("no ledger connection: {0}")]
    Pool(#[from] r2d2::Error),
    /// The writer thread has ended (the server is stopping), or dropped a write unanswered.
    #[error("the ledger writer has stopped")]
    WriterStopped,
    /// A write's own code panicked; its savepoint was rolled back.
    #[error("a ledger write panicked")]
    WritePanicked,
    /// A blocking read's thread ended without an answer.
    #[error("a ledger read did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A copy of the ledger could not be made or failed its check.
    #[error("{0}")]
    Backup(String),
    /// The ledger cannot be opened or brought up to date (at start-up, or by a CLI command).
    #[error("ledger {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// Any PostgreSQL failure but an unreachable database (a unique violation among them: see
    /// [`Error::is_unique_violation`]). The transaction was rolled back.
    #[error("{}", crate::pg_connect::error_text(.0))]
    Postgres(postgres::Error),
    /// The PostgreSQL ledger cannot be reached (down, restarting, a connection lost, no
    /// connection free in time): nothing was written, and asking again later may work (503).
    #[error("the ledger's database is unreachable: {0}")]
    Unreachable(String),
    /// The ledger holds a value it should not (an unknown status, a schema too new).
    #[error("the ledger holds a bad value: {0}")]
    Corrupt(String),
    /// Long ledger work (a report) was stopped by its caller's interrupt.
    #[error("the ledger's work was interrupted")]
    Interrupted,
}

impl Error {
    /// Whether the failure was a full disk (worth waiting for space and trying again).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull(_) => true,
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }

    /// Whether a unique index refused the write (a name, key or scheduled instant taken), on
    /// either engine: SQLite's UNIQUE / PRIMARY KEY constraint, PostgreSQL's SQLSTATE 23505.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }

    /// Whether the ledger's database could not be reached (worth a 503 and a retry).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable(_))
    }

    /// Whether PostgreSQL rolled the write back because of another write at the same time (a
    /// deadlock between two writes locking jobs in opposite orders, as two chained runs' ends
    /// can; a serialization failure): nothing was written, and running it again will work.
    pub fn is_retryable(&self) -> bool {
        use postgres::error::SqlState;
        matches!(self, Error::Postgres(e)
            if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
    }

    /// No PostgreSQL connection could be had from the pool (in time).
    pub(super) fn unreachable(e: r2d2::Error) -> Error {
        Error::Unreachable(format!("no connection: {e}"))
    }

    /// Opening or migrating the ledger at `path` failed because of `reason`.
    pub(super) fn open(path: &std::path::Path, reason: impl std::fmt::Display) -> Error {
        Error::Open {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            Error::DiskFull(e)
        } else {
            Error::Sqlite(e)
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        let lost = match e.code() {
            // Connection exceptions (class 08) and a server shutting down or starting up.
            Some(code) => {
                code.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                    ]
                    .contains(code)
            }
            // No SQLSTATE: the client's own failure; an I/O one means the connection is gone.
            None => {
                e.is_closed()
                    || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
            }
        };
        if lost {
            Error::Unreachable(e.to_string())
        } else {
            Error::Postgres(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_other_sqlite_failures() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(Error::from(full).is_disk_full());
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(!Error::from(busy).is_disk_full());
        assert!(!Error::from(rusqlite::Error::QueryReturnedNoRows).is_disk_full());
    }
}
