//! SQL for session tokens. Only the SHA-256 of a token is stored; a token expires after a period
//! without use.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::ApiError;

pub fn insert(conn: &Connection, token_hash: &str, user_id: i64, now: i64) -> Result<(), ApiError> {
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_used_at) VALUES (?1, ?2, ?3, ?3)",
        params![token_hash, user_id, now],
    )?;
    Ok(())
}

/// The user id and last use of a live session whose user is still active.
pub fn lookup(conn: &Connection, token_hash: &str) -> Result<Option<(i64, i64)>, ApiError> {
    Ok(conn
        .prepare_cached(
            "SELECT s.user_id, s.last_used_at FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND u.activity_status = 'Active'",
        )?
        .query_row([token_hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

pub fn touch(conn: &Connection, token_hash: &str, now: i64) -> Result<(), ApiError> {
    conn.execute(
        "UPDATE sessions SET last_used_at = ?2 WHERE token_hash = ?1",
        params![token_hash, now],
    )?;
    Ok(())
}

pub fn delete(conn: &Connection, token_hash: &str) -> Result<(), ApiError> {
    conn.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
    Ok(())
}

/// Removes sessions unused since `cutoff`.
pub fn delete_idle(conn: &Connection, cutoff: i64) -> Result<usize, ApiError> {
    Ok(conn.execute("DELETE FROM sessions WHERE last_used_at < ?1", [cutoff])?)
}
