//! SQL for API tokens: the long-lived credentials of services (issue 15). Only the SHA-256 of a
//! token is stored. A token works until it expires or is revoked, and only while its user is
//! active; revoking keeps the row (with who revoked it and when) so the audit trail can name it.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Error;
use super::audit::{self, Event};

/// A token as the ledger keeps it (never the secret).
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, user_id, name, created_at, expires_at, last_used_at, revoked_at";

fn map_token(row: &Row) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
        expires_at: row.get(4)?,
        last_used_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

/// Stores a new token and its audit event in one transaction; returns the token's id.
pub fn insert(
    conn: &Connection,
    user_id: i64,
    name: &str,
    token_hash: &str,
    expires_at: Option<i64>,
    now: i64,
    event: Event,
) -> Result<i64, Error> {
    conn.execute(
        "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, name, token_hash, now, expires_at],
    )?;
    let id = conn.last_insert_rowid();
    audit::record(conn, &event.object("API_TOKEN", id), now)?;
    Ok(id)
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<ApiToken>, Error> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1"),
            [id],
            map_token,
        )
        .optional()?)
}

/// The tokens that are not revoked, of one user or (`None`) of everyone, newest first.
pub fn list_live(conn: &Connection, user_id: Option<i64>) -> Result<Vec<ApiToken>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE revoked_at IS NULL AND user_id IS COALESCE(?1, user_id)
         ORDER BY id DESC"
    ))?;
    let tokens = stmt
        .query_map([user_id], map_token)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tokens)
}

/// The live token with this hash whose user is active: (token, user id). Expiry is the caller's
/// check (it answers a different message).
pub fn lookup(conn: &Connection, token_hash: &str) -> Result<Option<ApiToken>, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {} FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ?1 AND t.revoked_at IS NULL AND u.activity_status = 'Active'",
            COLUMNS
                .split(", ")
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?
        .query_row([token_hash], map_token)
        .optional()?)
}

/// Records a use, at most once a minute per token: a write on every request would serialise
/// every scrape behind the ledger's writer. Returns whether the row changed.
pub fn touch(conn: &Connection, id: i64, now: i64) -> Result<bool, Error> {
    Ok(conn.execute(
        "UPDATE api_tokens SET last_used_at = ?2
         WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2 - 60000)",
        params![id, now],
    )? > 0)
}

/// Revokes a live token and records the event; `false` when it was not live.
pub fn revoke(conn: &Connection, id: i64, by: i64, now: i64, event: Event) -> Result<bool, Error> {
    let changed = conn.execute(
        "UPDATE api_tokens SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, now, by],
    )?;
    if changed == 0 {
        return Ok(false);
    }
    audit::record(conn, &event.object("API_TOKEN", id), now)?;
    Ok(true)
}

/// Revokes every live token of `user_id` but the one whose hash is `keep`.
pub fn revoke_for_user(
    conn: &Connection,
    user_id: i64,
    keep: Option<&str>,
    now: i64,
) -> Result<usize, Error> {
    Ok(conn.execute(
        "UPDATE api_tokens SET revoked_at = ?3
         WHERE user_id = ?1 AND revoked_at IS NULL AND token_hash IS NOT ?2",
        params![user_id, keep, now],
    )?)
}
