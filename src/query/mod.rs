//! What saved queries read (the `SavedQuery` type and its validation are `domain::saved_query`):
//! the read-only data sources (`sources`: SQLite files, and PostgreSQL databases through
//! `postgres` and `pg_sql`), run arguments as named parameters (`params`), the streaming CSV
//! writer (`csv`), the child process that runs SQLite queries under the operating system's limits
//! (`worker`), and the demo lab database a first start creates (`demo`). Nothing here speaks
//! HTTP, writes to a data source, or touches the ledger.

pub mod csv;
pub mod demo;
pub mod params;
pub mod pg_sql;
pub mod postgres;
pub mod sources;
pub mod worker;

/// SQLite's own message of an error, without rusqlite's decoration.
pub fn sqlite_message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        rusqlite::Error::MultipleStatement => {
            "only one statement is allowed (remove everything after the first `;`)".to_string()
        }
        other => other.to_string(),
    }
}
