//! `store::Error`: how a ledger operation fails, in the store's own terms. A full disk is its own
//! kind, recognised once here from SQLite's result code, so callers that wait for space (a run's
//! end) match a variant instead of digging into the cause. The store knows nothing of HTTP or of
//! the contract's error codes: `ServiceError` wraps this, and `web::error` maps that.

use std::path::PathBuf;

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
}

impl Error {
    /// Whether the failure was a full disk (worth waiting for space and trying again).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull(_))
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
