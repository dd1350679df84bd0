//! SQL for saved queries (API.md §4). Deleted queries stay in the table with `deleted = 1` so
//! jobs and runs that name them keep their reference; the "live" queries never return them.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Error;
use crate::domain::saved_query::{SavedQuery, SavedQueryDraft};

const COLUMNS: &str = "id, title, sql, data_source, created_by, last_modified_on";

fn map_query(row: &Row) -> rusqlite::Result<SavedQuery> {
    Ok(SavedQuery {
        id: row.get(0)?,
        title: row.get(1)?,
        sql: row.get(2)?,
        data_source: row.get(3)?,
        created_by: row.get(4)?,
        last_modified_on: row.get(5)?,
    })
}

/// A saved query that is not deleted.
pub fn get_live(conn: &Connection, id: i64) -> Result<Option<SavedQuery>, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM saved_queries WHERE id = ?1 AND deleted = 0"
        ))?
        .query_row([id], map_query)
        .optional()?)
}

/// A saved query whether or not it is deleted (moved here from the jobs file's export).
pub fn get_any(conn: &Connection, id: i64) -> Result<Option<SavedQuery>, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM saved_queries WHERE id = ?1"
        ))?
        .query_row([id], map_query)
        .optional()?)
}

/// The live saved queries titled exactly `title`, by id (moved here from the jobs file's import).
pub fn live_titled(conn: &Connection, title: &str) -> Result<Vec<SavedQuery>, Error> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM saved_queries WHERE title = ?1 AND deleted = 0 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([title], map_query)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// `query` lowered with LIKE's wildcards escaped, so `%` and `_` match themselves.
fn like_pattern(query: Option<&str>) -> Option<String> {
    query.map(|q| {
        q.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    })
}

/// The saved queries list's statement. The page size is written in, not bound: a bound LIMIT
/// makes SQLite plan the statement again at every execution (see `runs::list_query`).
pub(in crate::store) fn list_query(max_results: i64) -> String {
    format!(
        "SELECT {COLUMNS} FROM saved_queries
         WHERE deleted = 0 AND (?1 IS NULL OR lower(title) LIKE '%' || ?1 || '%' ESCAPE '\\')
         ORDER BY id DESC LIMIT {max_results} OFFSET ?2"
    )
}

/// Live saved queries whose title contains `query` (any case), newest first.
pub fn list(
    conn: &Connection,
    query: Option<&str>,
    start_at: i64,
    max_results: i64,
) -> Result<Vec<SavedQuery>, Error> {
    let mut stmt = conn.prepare_cached(&list_query(max_results))?;
    let queries = stmt
        .query_map(params![like_pattern(query), start_at], map_query)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(queries)
}

/// Stores a validated saved query; returns its id.
pub fn insert(
    conn: &Connection,
    draft: &SavedQueryDraft,
    created_by: i64,
    now: i64,
) -> Result<i64, Error> {
    conn.execute(
        "INSERT INTO saved_queries (title, sql, data_source, created_by, last_modified_on)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![draft.title, draft.sql, draft.data_source, created_by, now],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Replaces title, SQL and data source of a live saved query.
pub fn replace(conn: &Connection, id: i64, draft: &SavedQueryDraft, now: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE saved_queries SET title = ?2, sql = ?3, data_source = ?4, last_modified_on = ?5
         WHERE id = ?1 AND deleted = 0",
        params![id, draft.title, draft.sql, draft.data_source, now],
    )?;
    Ok(())
}

/// Soft delete: the row stays (jobs keep their reference) but is no longer live.
pub fn soft_delete(conn: &Connection, id: i64, now: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE saved_queries SET deleted = 1, last_modified_on = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}
