//! SQL for session tokens. Only the SHA-256 of a token is stored; a token expires after a period
//! without use.

use rusqlite::{Connection, OptionalExtension, params};

use super::Error;
use crate::domain::user::SessionCutoffs;

pub fn insert(conn: &Connection, token_hash: &str, user_id: i64, now: i64) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_used_at) VALUES (?1, ?2, ?3, ?3)",
        params![token_hash, user_id, now],
    )?;
    Ok(())
}

/// A live session of a user who is still active.
pub struct Session {
    pub user_id: i64,
    pub created_at: i64,
    pub last_used_at: i64,
}

pub fn lookup(conn: &Connection, token_hash: &str) -> Result<Option<Session>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT s.user_id, s.created_at, s.last_used_at FROM sessions s
             JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND u.activity_status = 'Active'",
        )?
        .query_row([token_hash], |r| {
            Ok(Session {
                user_id: r.get(0)?,
                created_at: r.get(1)?,
                last_used_at: r.get(2)?,
            })
        })
        .optional()?)
}

/// Ends every session of a user but `keep` (the caller's own, when they changed their own
/// password): after a password change, a stolen token must stop working.
pub fn delete_for_user(
    conn: &Connection,
    user_id: i64,
    keep: Option<&str>,
) -> Result<usize, Error> {
    Ok(conn.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND token_hash IS NOT ?2",
        params![user_id, keep],
    )?)
}

pub fn touch(conn: &Connection, token_hash: &str, now: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE sessions SET last_used_at = ?2 WHERE token_hash = ?1",
        params![token_hash, now],
    )?;
    Ok(())
}

pub fn delete(conn: &Connection, token_hash: &str) -> Result<(), Error> {
    conn.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
    Ok(())
}

/// Removes the sessions that are expired by `cutoffs` (`SessionCutoffs::is_expired`, in SQL).
pub fn delete_expired(conn: &Connection, cutoffs: SessionCutoffs) -> Result<usize, Error> {
    Ok(conn.execute(
        "DELETE FROM sessions WHERE last_used_at < ?1 OR created_at < ?2",
        params![cutoffs.idle_before, cutoffs.created_before],
    )?)
}
